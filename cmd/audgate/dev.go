package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/spf13/cobra"

	"github.com/audgate/audgate/internal/config"
	"github.com/audgate/audgate/internal/devidp"
)

// devOptions are where `audgate dev` listens.
type devOptions struct {
	listen, admin, idp string
}

func newDevCmd() *cobra.Command {
	var o devOptions
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run everything on loopback: a development IdP, sample upstreams and the gateway",
		Long: `dev runs a development OpenID provider (real RFC 8693 token exchange,
client credentials and jwt-bearer), three sample upstreams that echo what they
receive, and the gateway with the embedded policy, all on loopback. It prints
tokens for the dev users and curl commands to try. Not for production: the
identity provider's users, clients and secrets are fixed and public.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
			tuneGC(log)
			return runDev(ctx, o, cmd.OutOrStdout(), log)
		},
	}
	cmd.Flags().StringVar(&o.listen, "listen", "127.0.0.1:8080", "gateway address")
	cmd.Flags().StringVar(&o.admin, "admin-listen", "127.0.0.1:9090", "admin address (/healthz, /readyz, /metrics)")
	cmd.Flags().StringVar(&o.idp, "idp-listen", "127.0.0.1:9400", "development identity provider address")
	cmd.AddCommand(newDevTokenCmd())
	return cmd
}

func newDevTokenCmd() *cobra.Command {
	var sub, idp string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "token --sub alice",
		Short: "Print a user's access token for the gateway from the running dev IdP",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := "sub=" + sub + "&ttl=" + ttl.String()
			resp, err := http.Get(strings.TrimSuffix(idp, "/") + "/dev/token?" + q)
			if err != nil {
				return fmt.Errorf("is `audgate dev` running? %w", err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("dev IdP: %s", strings.TrimSpace(string(body)))
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), strings.TrimSpace(string(body)))
			return err
		},
	}
	cmd.Flags().StringVar(&sub, "sub", "alice", "user: alice or bob")
	cmd.Flags().StringVar(&idp, "idp", "http://127.0.0.1:9400", "the dev IdP's address")
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "token lifetime")
	return cmd
}

// devProfileAudience is the self-signed sample upstream's audience.
const devProfileAudience = "https://profile.example.com"

// devConfig is the gateway's configuration in dev mode.
var devConfig = template.Must(template.New("dev").Parse(`
server:
  listen: {{.Listen}}
  admin_listen: {{.Admin}}
inbound:
  issuers:
    - issuer: {{.Issuer}}
      audiences: [` + devidp.AudienceGateway + `]
      algorithms: [RS256]
token_sources:
  - name: exchange
    type: token_exchange
    issuer: {{.Issuer}}
    client_id: audgate
    client_secret: audgate-dev-secret
  - name: m2m
    type: client_credentials
    issuer: {{.Issuer}}
    client_id: audgate-m2m
    client_secret: audgate-m2m-dev-secret
  - name: self
    type: self_signed
    issuer: http://{{.Listen}}
upstreams:
  - name: orders
    url: {{.Orders}}
    token_source: exchange
    audiences: [` + devidp.AudienceOrders + `]
  - name: billing
    url: {{.Billing}}
    token_source: m2m
    audiences: [` + devidp.AudienceBilling + `]
  - name: profile
    url: {{.Profile}}
    token_source: self
    audiences: [` + devProfileAudience + `]
routes:
  - {path: /orders, upstream: orders}
  - {path: /orders/*, upstream: orders}
  - {path: /billing/*, upstream: billing}
  - {path: /profile/*, upstream: profile}
`))

// runDev starts the dev IdP, the sample upstreams and the gateway, prints
// how to use them to out, and serves until ctx ends.
func runDev(ctx context.Context, o devOptions, out io.Writer, log *slog.Logger) error {
	// The dev IdP hands out tokens to anyone who asks (/dev/token), with
	// public secrets: it must not be reachable from elsewhere.
	for flag, addr := range map[string]string{"--idp-listen": o.idp, "--listen": o.listen, "--admin-listen": o.admin} {
		if !isLoopback(addr) {
			return fmt.Errorf("%s %s: audgate dev listens on loopback only (127.0.0.1 or [::1]); use audgate run for anything else", flag, addr)
		}
	}
	idpLn, err := net.Listen("tcp", o.idp)
	if err != nil {
		return fmt.Errorf("dev IdP: listen %s: %w", o.idp, err)
	}
	issuer := "http://" + idpLn.Addr().String() + "/"
	opts := devidp.DefaultOptions(issuer)
	for i := range opts.Users {
		// The self-signed sample upstream is open to both dev users.
		u := &opts.Users[i]
		u.Claims["permissions"] = append(u.Claims["permissions"].([]string), "profile:read")
	}
	idp, err := devidp.New(opts)
	if err != nil {
		idpLn.Close()
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/", idp.Handler())
	mux.HandleFunc("GET /dev/token", devTokenHandler(idp))
	idpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = idpSrv.Serve(idpLn) }()
	defer idpSrv.Close()

	vars := map[string]string{"Listen": o.listen, "Admin": o.admin, "Issuer": issuer}
	for _, name := range []string{"Orders", "Billing", "Profile"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: echoUpstream(strings.ToLower(name)), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		vars[name] = "http://" + ln.Addr().String()
	}
	var doc strings.Builder
	if err := devConfig.Execute(&doc, vars); err != nil {
		return err
	}
	cfg, err := config.Parse([]byte(doc.String()), func(string) (string, bool) { return "", false })
	if err != nil {
		return fmt.Errorf("dev config: %w", err)
	}
	if err := printDevHelp(out, idp, o); err != nil {
		return err
	}
	return serve(ctx, cfg, log)
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// devTokenHandler mints a user token, as the IdP would after a login.
func devTokenHandler(idp *devidp.Provider) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ttl, err := time.ParseDuration(r.URL.Query().Get("ttl"))
		if err != nil || ttl <= 0 {
			ttl = time.Hour
		}
		tok, err := idp.IssueUserToken(r.URL.Query().Get("sub"), devidp.AudienceGateway, []string{"openid"}, ttl)
		if err != nil {
			http.Error(w, err.Error()+"; the dev users are alice and bob", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = fmt.Fprintln(w, tok)
	}
}

func printDevHelp(out io.Writer, idp *devidp.Provider, o devOptions) error {
	alice, err := idp.IssueUserToken("alice", devidp.AudienceGateway, []string{"openid"}, time.Hour)
	if err != nil {
		return err
	}
	bob, err := idp.IssueUserToken("bob", devidp.AudienceGateway, []string{"openid"}, time.Hour)
	if err != nil {
		return err
	}
	gw := "http://" + o.listen
	_, err = fmt.Fprintf(out, `audgate dev: everything on loopback. Not for production.

  gateway        %[1]s   (/orders/* token exchange, /billing/* client credentials, /profile/* self-signed)
  admin          http://%[2]s   (/healthz /readyz /metrics)
  identity prov. %[3]s   (users alice, bob; tokens valid 1h)

  ALICE=%[4]s
  BOB=%[5]s

  curl -s -H "Authorization: Bearer $ALICE" %[1]s/orders/42          # exchanged for an orders token
  curl -s -H "Authorization: Bearer $ALICE" %[1]s/billing/7          # audgate's own billing token
  curl -s -H "Authorization: Bearer $ALICE" %[1]s/profile/me         # a token audgate signed
  curl -s -X POST -H "Authorization: Bearer $BOB" %[1]s/orders       # 403: bob may only read
  curl -s %[1]s/orders/42                                            # 401: no token

  A new token: go run ./cmd/audgate dev token --sub bob

`, gw, o.admin, idp.Issuer(), alice, bob)
	return err
}

// echoUpstream answers with what it received: method, path, headers and
// the claims of the bearer token (decoded, not verified: it is a demo).
func echoUpstream(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims := map[string]any{}
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if parts := strings.Split(tok, "."); len(parts) == 3 {
			if payload, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil {
				_ = json.Unmarshal(payload, &claims)
			}
		}
		headers := map[string]string{}
		for k, v := range r.Header {
			if k != "Authorization" {
				headers[k] = strings.Join(v, ", ")
			}
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(map[string]any{
			"upstream": name, "method": r.Method, "path": r.URL.RequestURI(),
			"headers": headers, "token_claims": claims,
		})
	})
}
