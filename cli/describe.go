package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// DescribeOptions are the inputs of `surge describe`.
type DescribeOptions struct {
	Streams
	NewClient clientFunc
	Now       func() time.Time
	Output    string
	Name      string
}

// Description is everything `surge describe` shows of a function; its
// json and yaml output.
type Description struct {
	Function api.Function `json:"function"`
	Traffic  *api.Traffic `json:"traffic,omitempty"`
	// Rollout is the function's latest rollout; nil before its second
	// revision took the traffic.
	Rollout   *api.Rollout   `json:"rollout,omitempty"`
	Revisions []api.Revision `json:"revisions"`
	Scales    []api.Scale    `json:"scales"`
	Replicas  []api.Replica  `json:"replicas"`
	// CrashLogs are the last log lines of the replicas whose container
	// exited (a crash loop), by replica.
	CrashLogs map[string][]string `json:"crashLogs,omitempty"`
}

func newDescribeCmd(s Streams, newClient clientFunc, d deps) *cobra.Command {
	o := &DescribeOptions{Streams: s, NewClient: newClient, Now: d.now}
	c := &cobra.Command{
		Use:               "describe NAME",
		Short:             "Show a function: its URL, spec, revisions, traffic and replicas, and a crashing replica's last log lines",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeFunctions(newClient),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			return runDescribe(cmd.Context(), o)
		},
	}
	addOutputFlag(c, &o.Output)
	return c
}

func fetchDescription(ctx context.Context, c *client.Client, name string) (*Description, error) {
	ns := c.Namespace()
	fn, err := client.Get[api.Function](ctx, c, api.Key{Namespace: ns, Name: name})
	if err != nil {
		return nil, err
	}
	d := &Description{Function: *fn}
	q := url.Values{"function": {name}}
	if d.Traffic, err = client.Get[api.Traffic](ctx, c, api.Key{Namespace: ns, Name: name}); err != nil {
		return nil, err
	}
	switch ro, err := client.Get[api.Rollout](ctx, c, api.Key{Namespace: ns, Name: name}); {
	case err == nil:
		d.Rollout = ro
	case !errors.Is(err, api.ErrNotFound):
		return nil, err
	}
	revs, err := client.List[api.Revision](ctx, c, ns, q)
	if err != nil {
		return nil, err
	}
	scales, err := client.List[api.Scale](ctx, c, ns, q)
	if err != nil {
		return nil, err
	}
	reps, err := client.List[api.Replica](ctx, c, ns, q)
	if err != nil {
		return nil, err
	}
	d.Revisions, d.Scales, d.Replicas = revs.Items, scales.Items, reps.Items
	for i := range d.Replicas {
		r := &d.Replicas[i]
		if !crashed(r) && (r.Status.Restarts == 0 || r.Status.Phase == api.ReplicaReady) {
			continue
		}
		if lines, err := logTail(ctx, c, r, crashTail); err == nil && len(lines) > 0 {
			if d.CrashLogs == nil {
				d.CrashLogs = map[string][]string{}
			}
			d.CrashLogs[r.Metadata.Name] = lines
		}
	}
	return d, nil
}

func runDescribe(ctx context.Context, o *DescribeOptions) error {
	if err := checkOutput(o.Output); err != nil {
		return err
	}
	c, err := o.NewClient()
	if err != nil {
		return err
	}
	d, err := fetchDescription(ctx, c, o.Name)
	if err != nil {
		return describeAPIError("function", o.Name, err)
	}
	if o.Output != outTable {
		return printStructured(o.Out, o.Output, d)
	}
	return printDescription(o.Out, d, o.Now())
}

func printDescription(w io.Writer, d *Description, now time.Time) error {
	f, s := &d.Function, &d.Function.Spec
	kv := newTable(w, "Name:", f.Metadata.Name)
	kv.row("Namespace:", f.Metadata.Namespace)
	if f.Status.URL != "" {
		kv.row("URL:", f.Status.URL)
	}
	kv.row("Created:", f.Metadata.CreationTimestamp.Format(time.RFC3339)+" ("+age(now, f.Metadata.CreationTimestamp)+" ago)")
	if len(f.Metadata.Labels) > 0 {
		kv.row("Labels:", labelList(f.Metadata.Labels))
	}
	kv.row("Image:", s.Image)
	if d := f.Status.ImageDigest; d != "" && !strings.Contains(s.Image, "@") {
		kv.row("Pinned to:", d)
	}
	if len(s.Command) > 0 {
		kv.row("Command:", strings.Join(s.Command, " "))
	}
	if len(s.Args) > 0 {
		kv.row("Args:", strings.Join(s.Args, " "))
	}
	kv.row("Port:", itoa(s.Port))
	if s.HTTPSRedirect {
		kv.row("HTTPS redirect:", "yes: plain HTTP requests are redirected to HTTPS")
	}
	if r := s.Readiness; r != nil {
		probe := "GET " + r.Path
		if r.Path == "" {
			probe = "TCP connect"
		}
		if r.Period.Duration > 0 {
			probe += " every " + r.Period.String()
		}
		kv.row("Readiness:", probe)
	}
	if len(s.ImagePullSecrets) > 0 {
		kv.row("Pull secrets:", strings.Join(s.ImagePullSecrets, ", "))
	}
	if len(s.NodeSelector) > 0 {
		pairs := make([]string, 0, len(s.NodeSelector))
		for _, k := range slices.Sorted(maps.Keys(s.NodeSelector)) {
			pairs = append(pairs, k+"="+s.NodeSelector[k])
		}
		kv.row("Node selector:", strings.Join(pairs, ", "))
	}
	env := make([]string, len(s.Env))
	for i, e := range s.Env {
		env[i] = e.Name + "=" + e.Value
	}
	kv.row("Env:", strings.Join(env, " "))
	kv.row("Resources:", "cpu "+s.Resources.CPU+", memory "+s.Resources.Memory)
	kv.row("Concurrency:", concurrency(s.Concurrency))
	kv.row("Timeout:", s.Timeout.String())
	sc := s.Scaling
	policy := fmt.Sprintf("%s replicas on %s", scaleRange(sc), sc.Metric)
	if sc.Target > 0 {
		policy += fmt.Sprintf(", target %g", sc.Target)
	}
	kv.row("Scaling:", policy)
	kv.row("Rollout:", rolloutWords(f))
	latest := f.Status.LatestRevision
	if latest != "" && latest != f.Status.LatestReadyRevision && !takesTraffic(d.Traffic, latest) {
		latest += " (rolling out: no Ready replica yet)"
	}
	kv.row("Latest revision:", latest)
	if ro := d.Rollout; ro != nil {
		line := ro.Spec.Revision
		if ro.Spec.From != "" {
			line += " from " + ro.Spec.From
		}
		line += ": " + phaseLine(ro)
		if ro.Status.Reason != "" {
			line += " (" + ro.Status.Reason + ")"
		}
		kv.row("Last rollout:", line)
	}
	if err := kv.flush(); err != nil {
		return err
	}

	share, tag := map[string]int32{}, map[string]string{}
	if d.Traffic != nil {
		for _, t := range d.Traffic.Spec.Targets {
			share[t.Revision], tag[t.Revision] = t.Percent, t.Tag
		}
	}
	desired, ready := map[string]int32{}, map[string]int32{}
	for _, sc := range d.Scales {
		desired[sc.Metadata.Name] = sc.Spec.Replicas
		ready[sc.Metadata.Name] = sc.Status.ReadyReplicas
	}
	fmt.Fprintln(w, "\nRevisions:")
	tagged := newTagColumn(d.Traffic)
	t := newTable(w, tagged.headers("  NAME", "TRAFFIC", "TAG", "DESIRED", "READY", "MODE", "REASON", "IMAGE", "AGE")...)
	for i := len(d.Revisions) - 1; i >= 0; i-- {
		r := d.Revisions[i]
		n := r.Metadata.Name
		mode, reason := "", ""
		for _, sc := range d.Scales {
			if sc.Metadata.Name == n {
				mode, reason = sc.Status.Mode, sc.Status.Reason
			}
		}
		t.row(tagged.cells("  "+n, fmt.Sprintf("%d%%", share[n]), tag[n], itoa(desired[n]), itoa(ready[n]), mode, reason, shortImage(r.Spec.Image()), age(now, r.Metadata.CreationTimestamp))...)
	}
	if err := t.flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nReplicas:")
	if len(d.Replicas) == 0 {
		fmt.Fprintln(w, "  <none>")
		return nil
	}
	t = newTable(w, "  NAME", "REVISION", "NODE", "IP", "PHASE", "RESTARTS", "START", "AGE")
	for _, r := range d.Replicas {
		addr := r.Status.IP
		if addr != "" && r.Status.Port != 0 {
			addr += fmt.Sprintf(":%d", r.Status.Port)
		}
		t.row("  "+r.Metadata.Name, r.Spec.Revision, r.Spec.NodeName, addr, string(r.Status.Phase),
			itoa(r.Status.Restarts), r.Status.StartLatency, age(now, r.Metadata.CreationTimestamp))
	}
	if err := t.flush(); err != nil {
		return err
	}
	// Why a replica is not Ready is the first thing a user asks.
	for _, r := range d.Replicas {
		if r.Status.Message != "" {
			fmt.Fprintf(w, "  %s: %s\n", r.Metadata.Name, r.Status.Message)
		}
	}
	for _, r := range d.Replicas {
		if lines := d.CrashLogs[r.Metadata.Name]; len(lines) > 0 {
			fmt.Fprintf(w, "\nLast log lines of %s:\n", r.Metadata.Name)
			printIndented(w, lines)
		}
	}
	return nil
}

// labelList writes labels as "k=v k2=v2", sorted.
func labelList(labels map[string]string) string {
	parts := make([]string, 0, len(labels))
	for _, k := range sortedKeys(labels) {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, " ")
}

// takesTraffic reports whether t sends rev a share of the requests.
func takesTraffic(t *api.Traffic, rev string) bool {
	if t == nil {
		return false
	}
	for _, tt := range t.Spec.Targets {
		if tt.Revision == rev && tt.Percent > 0 {
			return true
		}
	}
	return false
}

// printIndented writes lines indented by two spaces; empty ones stay empty.
func printIndented(w io.Writer, lines []string) {
	for _, l := range lines {
		if l == "" {
			fmt.Fprintln(w)
			continue
		}
		fmt.Fprintf(w, "  %s\n", l)
	}
}
