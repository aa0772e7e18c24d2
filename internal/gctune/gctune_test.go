package gctune

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	o := Options{Budget: 256 << 20, Min: 100, Max: 400}
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, 400},
		{1 << 20, 400},
		{256 << 20 / 5, 400},
		{64 << 20, 300},
		{100 << 20, 156},
		{128 << 20, 100},
		{200 << 20, 100},
		{256 << 20, 100},
		{1 << 40, 100},
	} {
		if got := o.Percent(c.live); got != c.want {
			t.Errorf("Percent(%d MiB) = %d, want %d", c.live>>20, got, c.want)
		}
	}
}

// gogc is the collector's GOGC as the runtime reports it.
func gogc() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

// waitFor collects until GOGC is want; the tuner runs after collections.
func waitFor(t *testing.T, want int) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		runtime.GC()
		if gogc() == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("GOGC is %d, want %d", gogc(), want)
}

// TestTunerFollowsTheLiveHeap holds a live heap as large as the budget,
// then drops it: GOGC goes to Min, then back to Max.
func TestTunerFollowsTheLiveHeap(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)
	tu := Start(Options{Budget: 64 << 20, Min: 150, Max: 350})
	defer tu.Stop()
	waitFor(t, 350)

	ballast := make([]byte, 64<<20)
	for i := range ballast {
		ballast[i] = byte(i)
	}
	waitFor(t, 150)
	if tu.Percent() != 150 {
		t.Errorf("Percent() = %d, want 150", tu.Percent())
	}
	runtime.KeepAlive(ballast) // unreachable from here on
	waitFor(t, 350)

	tu.Stop()
	debug.SetGCPercent(123)
	runtime.GC()
	runtime.GC()
	if got := gogc(); got != 123 {
		t.Errorf("after Stop, GOGC = %d; the tuner changed it", got)
	}
}

// TestPercentOddOptions: bounds out of order or below 1, and a budget past
// what an integer product would hold, still give a GOGC within them.
func TestPercentOddOptions(t *testing.T) {
	for _, c := range []struct {
		o    Options
		live uint64
		want int
	}{
		{Options{Budget: 1 << 62, Min: 100, Max: 400}, 1 << 40, 400},
		{Options{Budget: 100, Min: -5, Max: 0}, 99, 1},
		{Options{Budget: 100, Min: 300, Max: 200}, 10, 300},
		{Options{Budget: 1000, Min: 50, Max: 500}, 400, 150},
	} {
		if got := c.o.Percent(c.live); got != c.want {
			t.Errorf("%+v Percent(%d) = %d, want %d", c.o, c.live, got, c.want)
		}
	}
}
