// Package loadtest compares audgate with a plain httputil.ReverseProxy
// under load, each in its own process, on loopback: throughput, CPU time
// per request of the proxy process alone, and latency at half load.
//
// It runs only when asked, since it takes about a minute:
//
//	AUDGATE_LOAD=1 go test -run TestLoad -v ./internal/loadtest/
//
// AUDGATE_LOAD_SECONDS sets each measurement's length (default 8),
// AUDGATE_LOAD_CONNS the number of concurrent connections (default 32),
// and AUDGATE_LOAD_CPUPROFILE a file for the audgate process's CPU profile.
// GOGC and GOMEMLIMIT, when set, apply to both proxy processes.
package loadtest
