package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// upstream records the last request and answers with status.
type upstream struct {
	srv    *httptest.Server
	last   atomic.Pointer[http.Request]
	status atomic.Int32
	calls  atomic.Int32
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.status.Store(200)
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.calls.Add(1)
		u.last.Store(r.Clone(context.Background()))
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(int(u.status.Load()))
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func newProxy(t *testing.T, target string, timeout time.Duration) (*Upstream, *[]error) {
	t.Helper()
	var errs []error
	u, _ := url.Parse(target)
	p, err := New(Options{Name: "orders", URL: u, Timeout: timeout, ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
		errs = append(errs, err)
		w.WriteHeader(599)
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p, &errs
}

func serve(p *Upstream, method, target string, h http.Header, out *Outbound) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	for k, v := range h {
		r.Header[k] = v
	}
	w := httptest.NewRecorder()
	p.Serve(w, r, out)
	return w
}

func TestRewrite(t *testing.T) {
	up := newUpstream(t)
	p, _ := newProxy(t, up.srv.URL+"/base", 0)
	w := serve(p, "GET", "http://gw/api/orders/1?x=1", http.Header{
		"Authorization":   {"Bearer caller"},
		"Connection":      {"Authorization, X-User-Id, X-Request-Id"},
		"X-Forwarded-For": {"6.6.6.6"},
		"True-Client-Ip":  {"6.6.6.6"},
		"X-User-Id":       {"mallory"},
	}, &Outbound{Token: "downstream", Headers: []Header{{"X-User-Id", "alice"}}, StripPrefix: "/api", RequestID: "req-1"})
	if w.Code != 200 {
		t.Fatalf("status %d", w.Code)
	}
	r := up.last.Load()
	checks := map[string][2]string{
		"URI":             {r.RequestURI, "/base/orders/1?x=1"},
		"Authorization":   {r.Header.Get("Authorization"), "Bearer downstream"},
		"X-User-Id":       {r.Header.Get("X-User-Id"), "alice"},
		"X-Request-Id":    {r.Header.Get("X-Request-Id"), "req-1"},
		"X-Forwarded-For": {r.Header.Get("X-Forwarded-For"), "192.0.2.1"},
		"True-Client-Ip":  {r.Header.Get("True-Client-Ip"), ""},
	}
	for name, c := range checks {
		if c[0] != c[1] {
			t.Errorf("%s = %q, want %q", name, c[0], c[1])
		}
	}
}

func TestServeWithoutTokenProxiesNothing(t *testing.T) {
	up := newUpstream(t)
	p, errs := newProxy(t, up.srv.URL, 0)
	serve(p, "GET", "http://gw/x", nil, &Outbound{})
	serve(p, "GET", "http://gw/x", nil, nil)
	if up.calls.Load() != 0 || len(*errs) != 2 || !errors.Is((*errs)[0], ErrUnavailable) {
		t.Errorf("calls %d, errors %v", up.calls.Load(), *errs)
	}
}

func TestErrorsClassified(t *testing.T) {
	// The slow upstream answers only when the proxy gives up on it.
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer slow.Close()
	p, errs := newProxy(t, slow.URL, 50*time.Millisecond)
	serve(p, "GET", "http://gw/x", nil, &Outbound{Token: "t"})
	closed, errs2 := newProxy(t, "http://127.0.0.1:1", 0)
	serve(closed, "GET", "http://gw/x", nil, &Outbound{Token: "t"})
	if len(*errs) != 1 || !errors.Is((*errs)[0], ErrTimeout) {
		t.Errorf("slow upstream: %v, want ErrTimeout", *errs)
	}
	if len(*errs2) != 1 || !errors.Is((*errs2)[0], ErrUnavailable) {
		t.Errorf("closed port: %v, want ErrUnavailable", *errs2)
	}
}

func TestRetryOn401(t *testing.T) {
	tests := []struct {
		name      string
		method    string
		body      string
		drop      bool
		wantCalls int32
		wantCode  int
	}{
		{name: "GET retried", method: "GET", drop: true, wantCalls: 2, wantCode: 200},
		{name: "DELETE retried", method: "DELETE", drop: true, wantCalls: 2, wantCode: 200},
		{name: "POST not retried", method: "POST", body: "x", drop: true, wantCalls: 1, wantCode: 401},
		{name: "drop declined", method: "GET", drop: false, wantCalls: 1, wantCode: 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			var auths []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				auths = append(auths, r.Header.Get("Authorization"))
				if calls.Add(1) == 1 {
					w.WriteHeader(401)
				}
			}))
			defer srv.Close()
			p, _ := newProxy(t, srv.URL, 0)
			var r *http.Request
			if tc.body != "" {
				r = httptest.NewRequest(tc.method, "http://gw/x", strings.NewReader(tc.body))
			} else {
				r = httptest.NewRequest(tc.method, "http://gw/x", nil)
			}
			w := httptest.NewRecorder()
			p.Serve(w, r, &Outbound{Token: "old", Drop: func() bool { return tc.drop },
				Refresh: func(context.Context) (string, error) { return "fresh", nil }})
			if calls.Load() != tc.wantCalls || w.Code != tc.wantCode {
				t.Fatalf("calls %d status %d, want %d %d", calls.Load(), w.Code, tc.wantCalls, tc.wantCode)
			}
			if tc.wantCalls == 2 && (auths[0] != "Bearer old" || auths[1] != "Bearer fresh") {
				t.Errorf("tokens sent: %v", auths)
			}
		})
	}
}

func TestBufferPool(t *testing.T) {
	b := buffers.Get()
	if len(b) != 32<<10 {
		t.Fatalf("buffer of %d bytes", len(b))
	}
	buffers.Put(b[:10])
	if got := buffers.Get(); len(got) != 32<<10 {
		t.Errorf("a returned buffer came back with %d bytes", len(got))
	}
	buffers.Put(make([]byte, 5)) // foreign sizes are not pooled
}

func TestStripPrefix(t *testing.T) {
	tests := []struct{ path, prefix, want string }{
		{"/api/orders/1", "/api", "/orders/1"},
		{"/api", "/api", "/"},
		{"/api/", "/api", "/"},
		{"/api/orders", "/api/", "/orders"},
		{"/apiadmin/users", "/api", "/apiadmin/users"},
		{"/publicadmin/users", "/public", "/publicadmin/users"},
		{"/other/x", "/api", "/other/x"},
		{"", "/api", ""},
	}
	for _, tc := range tests {
		if got := stripPrefix(tc.path, tc.prefix); got != tc.want {
			t.Errorf("stripPrefix(%q, %q) = %q, want %q", tc.path, tc.prefix, got, tc.want)
		}
	}
}
