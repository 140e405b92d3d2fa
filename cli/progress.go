package cli

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// progress prints the steps of a long command (build, push, deploy, wait)
// to a stream, one line per step with the time it took. On a terminal the
// running step has a spinner and its latest detail, redrawn in place; when
// piped, each step is one plain line once it ends, and details are lines
// of their own.
type progress struct {
	w   io.Writer
	now func() time.Time
	tty bool
	// period is how often the spinner turns.
	period time.Duration

	mu      sync.Mutex
	step    string    // the running step's text; "" when none runs
	detail  string    // its latest detail
	started time.Time // when it began
	frame   int
	stop    chan struct{}
	done    chan struct{}
}

// spinnerFrames are drawn in turn while a step runs on a terminal.
var spinnerFrames = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// spinnerPeriod is how often the spinner turns.
const spinnerPeriod = 100 * time.Millisecond

// newProgress returns a progress on w; tty draws a spinner, and should be
// isTerminal(w).
func newProgress(w io.Writer, now func() time.Time, tty bool) *progress {
	return &progress{w: w, now: now, tty: tty, period: spinnerPeriod}
}

// isTerminal reports whether w is a character device (a terminal), where
// a spinner may redraw its line.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// start begins a step, ending the one before if it still runs.
func (p *progress) start(format string, args ...any) {
	p.end("")
	p.mu.Lock()
	defer p.mu.Unlock()
	p.step, p.detail, p.started, p.frame = fmt.Sprintf(format, args...), "", p.now(), 0
	if !p.tty {
		return
	}
	p.drawLocked()
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	go p.spin(p.stop, p.done, p.period)
}

// spin redraws the running step until stop is closed.
func (p *progress) spin(stop <-chan struct{}, done chan<- struct{}, period time.Duration) {
	defer close(done)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			p.mu.Lock()
			p.frame++
			p.drawLocked()
			p.mu.Unlock()
		}
	}
}

func (p *progress) drawLocked() {
	line := spinnerFrames[p.frame%len(spinnerFrames)] + " " + p.step
	if p.detail != "" {
		line += ": " + p.detail
	}
	fmt.Fprintf(p.w, "\r\033[K%s", line)
}

// note says what the running step is doing now: drawn beside the
// spinner on a terminal, otherwise printed after the step's text, once
// for each change.
func (p *progress) note(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := fmt.Sprintf(format, args...)
	if d == p.detail {
		return
	}
	p.detail = d
	if p.tty && p.step != "" {
		p.drawLocked()
		return
	}
	if p.step == "" {
		fmt.Fprintln(p.w, d)
		return
	}
	fmt.Fprintf(p.w, "%s: %s\n", p.step, d)
}

// end finishes the running step with a result line (the step's own text
// when result is empty) and the time it took.
func (p *progress) end(result string) {
	p.mu.Lock()
	if p.step == "" {
		p.mu.Unlock()
		return
	}
	stop, done := p.stop, p.done
	p.stop, p.done = nil, nil
	p.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if result == "" {
		result = p.step
	}
	took := p.now().Sub(p.started)
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K✓ %s (%s)\n", result, roundDuration(took))
	} else {
		fmt.Fprintf(p.w, "%s (%s)\n", result, roundDuration(took))
	}
	p.step, p.detail = "", ""
}

// fail ends the running step without a result line: the error that
// follows says what went wrong. On a terminal it clears the spinner.
func (p *progress) fail() {
	p.mu.Lock()
	stop, done := p.stop, p.done
	p.stop, p.done = nil, nil
	running := p.step != ""
	p.step, p.detail = "", ""
	p.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	if running && p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

// roundDuration writes a step's time the way people read it: 850ms, 1.2s,
// 1m5s.
func roundDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
