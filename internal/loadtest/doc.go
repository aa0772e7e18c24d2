// Package loadtest compares audgate with a plain httputil.ReverseProxy
// under load, each in its own process pinned to its own CPU (with taskset,
// when present; the load generator and the upstream share the other), on
// loopback: throughput and CPU time per request of the proxy process
// alone, on two workloads with the shipped default policy: one caller on
// one path, and many callers on many paths in random pairs. Rounds
// alternate which proxy goes first; the report is the median of the
// rounds, and the decision cache's hit rate.
//
// It runs only when asked, since it takes about a minute:
//
//	AUDGATE_LOAD=1 go test -run TestLoad -v ./internal/loadtest/
//
// AUDGATE_LOAD_SECONDS sets each measurement's length (default 5),
// AUDGATE_LOAD_ROUNDS the rounds (default 3), AUDGATE_LOAD_CONNS the
// concurrent connections (default 32), AUDGATE_LOAD_USERS and
// AUDGATE_LOAD_PATHS the varied workload's callers and paths (default 500
// and 200), AUDGATE_LOAD_DECISION_CACHE=off turns the decision cache off,
// AUDGATE_LOAD_CPUPROFILE and AUDGATE_LOAD_HEAPPROFILE name files for the
// audgate process's CPU profile and, at its end, its heap profile. Both proxy
// processes tune GOGC as audgate run does (internal/gctune) unless GOGC
// is set; GOGC and GOMEMLIMIT, when set, apply to both.
package loadtest
