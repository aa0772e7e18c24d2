package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"

	"github.com/audgate/audgate/internal/policy"
)

// Logged is one decision log event as replay reads it: the input the
// policy saw and what it returned. A bare input document is an event with
// only an input.
type Logged struct {
	DecisionID string          `json:"decision_id"`
	Input      *policy.Input   `json:"input"`
	Result     any             `json:"result"`
	Error      json.RawMessage `json:"error"`
	Custom     map[string]any  `json:"custom"`
}

// ReadLogged reads an event or a bare input from raw JSON.
func ReadLogged(raw []byte) (*Logged, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	var l Logged
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // claims keep their numbers as written
	isEvent := false
	for _, k := range []string{"input", "decision_id", "path", "result", "erased", "masked"} {
		_, found := probe[k]
		isEvent = isEvent || found
	}
	if isEvent {
		if err := dec.Decode(&l); err != nil {
			return nil, fmt.Errorf("not a decision log event: %w", err)
		}
	} else {
		l.Input = new(policy.Input)
		if err := dec.Decode(l.Input); err != nil {
			return nil, fmt.Errorf("not a policy input: %w", err)
		}
	}
	if l.Input == nil {
		return nil, errors.New("the event has no input (was it masked whole?)")
	}
	return &l, nil
}

// requestID is the event's custom.request_id, if any.
func (l *Logged) requestID() string {
	s, _ := l.Custom["request_id"].(string)
	return s
}

// DecideInput runs a logged input through the policy stage as a served
// request would reach it: the policy, then the decision checked against
// the upstream the input names; trace, if set, gets the evaluation
// trace, and printTo the output of print() in the policy. It is for eval
// --input and replay.
func (g *Gateway) DecideInput(ctx context.Context, in *policy.Input, trace, printTo io.Writer) *Evaluation {
	if printTo != nil { // print() in the policy writes here, not to the log
		ctx = context.WithValue(ctx, dryRunKey{}, &dryRun{print: printTo})
	}
	ev := &Evaluation{Input: in}
	up, ok := g.ups[in.Upstream.Name]
	if !ok {
		ev.Status, ev.Error = http.StatusNotFound, fmt.Sprintf("no_upstream: the input names upstream %q, which the configuration does not define", in.Upstream.Name)
		return ev
	}
	v, err := g.decide(ctx, up, in, trace)
	if v.decided {
		d := v.decision
		ev.Decision = &d
	}
	ev.Status = http.StatusOK
	if err != nil {
		res := errorResponse(err)
		ev.Status, ev.Error, ev.Cause = res.status, res.code+": "+res.desc, err.Error()
	}
	return ev
}

// outcome is what a decision came to, for comparing two of them.
type outcome struct {
	kind    string // allow, deny, error
	status  int
	aud     string
	scopes  []string
	headers policy.Headers
	detail  string
}

func (o outcome) String() string {
	switch o.kind {
	case "allow":
		return fmt.Sprintf("allow (audience %q, scopes %v, headers %v)", o.aud, o.scopes, o.headers.Map())
	case "deny":
		return fmt.Sprintf("deny %d (%s)", o.status, o.detail)
	}
	return "error (" + o.detail + ")"
}

// loggedOutcome is what the logged event came to, by the same rules as a
// live decision: its raw result decoded and checked against the upstream.
func (g *Gateway) loggedOutcome(l *Logged) outcome {
	if len(l.Error) > 0 && string(l.Error) != "null" {
		return outcome{kind: "error", detail: "evaluation error: " + string(l.Error)}
	}
	if l.Result == nil {
		return outcome{kind: "deny", status: http.StatusForbidden, detail: "undefined"}
	}
	d, err := policy.DecodeResult(l.Result)
	if err == nil {
		if up, ok := g.ups[l.Input.Upstream.Name]; ok {
			err = d.Check(up.limits)
		}
	}
	if err != nil {
		return outcome{kind: "error", detail: err.Error()}
	}
	return decisionOutcome(d)
}

func decisionOutcome(d policy.Decision) outcome {
	if !d.Allow {
		return outcome{kind: "deny", status: d.DenyStatus(), detail: d.Reason}
	}
	scopes := slices.Clone(d.Scopes)
	slices.Sort(scopes)
	return outcome{kind: "allow", aud: d.Audience, scopes: slices.Compact(scopes), headers: d.Headers}
}

func evaluationOutcome(ev *Evaluation) outcome {
	if ev.Decision == nil || ev.Status >= http.StatusInternalServerError {
		return outcome{kind: "error", detail: ev.Error + " " + ev.Cause}
	}
	return decisionOutcome(*ev.Decision)
}

// ReplayReport is what a replay found.
type ReplayReport struct {
	Evaluated   int `json:"evaluated"`
	Unchanged   int `json:"unchanged"`
	AllowToDeny int `json:"allow_to_deny"`
	DenyToAllow int `json:"deny_to_allow"`
	// Changed counts allows whose audience, scopes or headers changed.
	Changed int `json:"changed_audience_scopes_headers"`
	// Errors counts events that cannot be read, and decisions that are
	// policy errors now or were then, where they differ.
	Errors int `json:"errors"`
	// Differences are the first events that differ.
	Differences []ReplayDifference `json:"differences,omitempty"`
}

// Changes is how many events would be decided otherwise.
func (r *ReplayReport) Changes() int { return r.AllowToDeny + r.DenyToAllow + r.Changed + r.Errors }

// ReplayDifference is one event the policy would now decide otherwise.
type ReplayDifference struct {
	Line       int    `json:"line"`
	DecisionID string `json:"decision_id,omitempty"`
	RequestID  string `json:"request_id,omitempty"`
	Request    string `json:"request,omitempty"`
	Was        string `json:"was"`
	Now        string `json:"now"`
}

// maxDifferences bounds the differences a report lists.
const maxDifferences = 20

// Replay re-evaluates every event of a decision log (one JSON event a
// line) with this gateway's policy, as DecideInput does, and compares each
// new decision with the logged one. progress, if set, is called every
// 1000 events.
func (g *Gateway) Replay(ctx context.Context, log io.Reader, progress func(n int)) (*ReplayReport, error) {
	r := &ReplayReport{}
	sc := bufio.NewScanner(log)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	line := 0
	for sc.Scan() {
		line++
		raw := bytes.TrimSpace(sc.Bytes())
		if len(raw) == 0 {
			continue
		}
		if err := ctx.Err(); err != nil {
			return r, err
		}
		r.Evaluated++
		if progress != nil && r.Evaluated%1000 == 0 {
			progress(r.Evaluated)
		}
		l, err := ReadLogged(raw)
		if err != nil {
			r.Errors++
			r.note(ReplayDifference{Line: line, Was: "unreadable", Now: err.Error()})
			continue
		}
		was := g.loggedOutcome(l)
		now := evaluationOutcome(g.DecideInput(ctx, l.Input, nil, nil))
		if sameOutcome(was, now) {
			r.Unchanged++
			continue
		}
		switch {
		case was.kind == "error" || now.kind == "error":
			r.Errors++
		case was.kind == "allow" && now.kind == "deny":
			r.AllowToDeny++
		case was.kind == "deny" && now.kind == "allow":
			r.DenyToAllow++
		case was.kind == "allow":
			r.Changed++
		default: // a deny's status or reason: not a change of outcome
			r.Unchanged++
			continue
		}
		r.note(ReplayDifference{Line: line, DecisionID: l.DecisionID, RequestID: l.requestID(),
			Request: l.Input.Request.Method + " " + l.Input.Request.Path, Was: was.String(), Now: now.String()})
	}
	if err := sc.Err(); err != nil {
		return r, fmt.Errorf("line %d: %w", line+1, err)
	}
	return r, nil
}

func (r *ReplayReport) note(d ReplayDifference) {
	if len(r.Differences) < maxDifferences {
		r.Differences = append(r.Differences, d)
	}
}

// sameOutcome: the same kind and, for an allow, the same token and
// headers. Denies and errors compare by kind alone: an error's text is
// worded differently in the log than in a new evaluation, and a policy
// that failed then and fails now has not changed the outcome.
func sameOutcome(a, b outcome) bool {
	if a.kind != b.kind {
		return false
	}
	if a.kind != "allow" {
		return true
	}
	return a.aud == b.aud && slices.Equal(a.scopes, b.scopes) && slices.Equal(a.headers, b.headers)
}
