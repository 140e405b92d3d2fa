package leader_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/surgeplatform/surge/controlplane/controlplanetest/etcdtest"
	"github.com/surgeplatform/surge/controlplane/leader"
	"github.com/surgeplatform/surge/internal/backoff"
	"github.com/surgeplatform/surge/internal/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const key = "/test/election/"

// testTimeout bounds a wait for something that must happen; it is a bound
// on a hang, not a measurement.
const testTimeout = time.Minute

// candidate runs an Elector whose one task reports "ID leads" when it
// starts and "ID stops" when its ctx ends.
type candidate struct {
	t      *testing.T
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, cli *clientv3.Client, cfg leader.Config, events chan<- string, tasks ...leader.Task) *candidate {
	t.Helper()
	el, err := leader.New(cli, cfg)
	if err != nil {
		t.Fatal(err)
	}
	report := func(ctx context.Context) error {
		events <- cfg.ID + " leads"
		<-ctx.Done()
		events <- cfg.ID + " stops"
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &candidate{t: t, cancel: cancel, done: make(chan error, 1)}
	go func() { c.done <- el.Run(ctx, append([]leader.Task{report}, tasks...)...) }()
	t.Cleanup(c.stop)
	return c
}

// stop ends the candidate's Run and waits for it to return.
func (c *candidate) stop() {
	c.cancel()
	if c.done == nil {
		return
	}
	if err := <-c.done; err != nil {
		c.t.Errorf("Run returned %v after a clean stop, want nil", err)
	}
	c.done = nil
}

func config(id string) leader.Config {
	cfg := leader.DefaultConfig()
	cfg.Key, cfg.ID = key, id
	return cfg
}

func next(t *testing.T, events <-chan string) string {
	t.Helper()
	select {
	case e := <-events:
		return e
	case <-time.After(testTimeout):
		t.Fatalf("no event within %s", testTimeout)
		return ""
	}
}

func expect(t *testing.T, events <-chan string, want ...string) {
	t.Helper()
	for _, w := range want {
		if got := next(t, events); got != w {
			t.Fatalf("event %q, want %q", got, w)
		}
	}
}

// candidates returns the values under the election key, oldest first.
func candidates(t *testing.T, cli *clientv3.Client) []string {
	t.Helper()
	resp, err := cli.Get(context.Background(), key, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Value))
	}
	return out
}

// waitCandidates waits, on a watch of the election key, until there are n
// candidates.
func waitCandidates(t *testing.T, cli *clientv3.Client, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	resp, err := cli.Get(ctx, key, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	// From the revision read, so that no change before the watch starts
	// goes unseen.
	wch := cli.Watch(ctx, key, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	for {
		if got := candidates(t, cli); len(got) == n {
			return got
		}
		select {
		case <-wch:
		case <-ctx.Done():
			t.Fatalf("waited %s for %d candidates; have %v", testTimeout, n, candidates(t, cli))
		}
	}
}

func TestOneLeadsAndHandsOverOnStop(t *testing.T) {
	cli := etcdtest.Start(t)
	events := make(chan string, 10)
	a := start(t, cli, config("a"), events)
	expect(t, events, "a leads")
	b := start(t, cli, config("b"), events)
	if got := waitCandidates(t, cli, 2); got[0] != "a" || got[1] != "b" {
		t.Fatalf("candidates %v, want a (leading) then b", got)
	}
	select {
	case e := <-events:
		t.Fatalf("%q while a leads", e)
	default:
	}

	// a's task stops before a resigns, so b cannot lead before it has.
	a.stop()
	expect(t, events, "a stops", "b leads")
	if got := candidates(t, cli); len(got) != 1 || got[0] != "b" {
		t.Errorf("candidates after a stopped: %v, want only b (a's lease revoked)", got)
	}
	b.stop()
	expect(t, events, "b stops")
	if got := candidates(t, cli); len(got) != 0 {
		t.Errorf("candidates after both stopped: %v", got)
	}
}

func TestStopWhileCampaigning(t *testing.T) {
	cli := etcdtest.Start(t)
	events := make(chan string, 10)
	start(t, cli, config("a"), events)
	expect(t, events, "a leads")
	b := start(t, cli, config("b"), events)
	waitCandidates(t, cli, 2)
	b.stop()
	if got := candidates(t, cli); len(got) != 1 || got[0] != "a" {
		t.Errorf("candidates after b gave up: %v, want only a", got)
	}
	select {
	case e := <-events:
		t.Fatalf("%q: b led, or a stopped", e)
	default:
	}
}

func TestLostLeaseStopsTheTasksAndCampaignsAgainAfterBackOff(t *testing.T) {
	cli := etcdtest.Start(t)
	clk := clock.NewFake()
	cfg := config("a")
	cfg.Clock = clk
	cfg.TTL = 2 // keep-alives every second or so, to notice the loss soon
	cfg.Backoff = backoff.Policy{Base: 10 * time.Second, Max: 10 * time.Second}
	events := make(chan string, 10)
	start(t, cli, cfg, events)
	expect(t, events, "a leads")

	// The lease is lost, as in a partition longer than the TTL.
	resp, err := cli.Get(context.Background(), key, clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("election key: %v, %v", resp, err)
	}
	if _, err := cli.Revoke(context.Background(), clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	expect(t, events, "a stops")

	// The candidate waits out its back-off on the clock before it
	// campaigns again.
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := clk.BlockUntilContext(ctx, 1); err != nil {
		t.Fatalf("no back-off: %v", err)
	}
	select {
	case e := <-events:
		t.Fatalf("%q during the back-off", e)
	default:
	}
	clk.Advance(10 * time.Second)
	expect(t, events, "a leads")
}

func TestFailedTaskEndsTheTerm(t *testing.T) {
	cli := etcdtest.Start(t)
	cfg := config("a")
	cfg.Backoff = backoff.Policy{Base: time.Millisecond, Max: time.Millisecond}
	events := make(chan string, 10)
	var terms atomic.Int32
	failOnce := func(ctx context.Context) error {
		if terms.Add(1) == 1 {
			return errors.New("broken")
		}
		<-ctx.Done()
		return nil
	}
	a := start(t, cli, cfg, events, failOnce)
	// The first term ends with the failure, the next one lasts.
	expect(t, events, "a leads", "a stops", "a leads")
	a.stop()
	if n := terms.Load(); n != 2 {
		t.Errorf("%d terms, want 2", n)
	}
}

func TestNewReportsEveryBadField(t *testing.T) {
	cfg := leader.DefaultConfig()
	cfg.TTL = -1
	_, err := leader.New(nil, cfg)
	for _, field := range []string{"Key", "ID", "TTL"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("New = %v, want an error naming %s", err, field)
		}
	}
}
