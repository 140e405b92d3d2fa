package network

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
)

// Firewall applies a Policy to the filter table of the network namespace
// it runs in, with iptables-restore and ip6tables-restore: each Apply
// replaces the policy's chains and jumps in one transaction per family, so
// no packet meets half a policy, and deletes the chains of the bridge the
// policy no longer has. It owns the chains Owned names, and touches no
// other rule. Its methods run the iptables tools on the calling goroutine
// (a test may run them in a namespace of its own); they are not safe for
// concurrent use.
type Firewall struct {
	bridge string
	log    *slog.Logger
	// changed lists the sysctls Apply turned on, for Remove to turn off.
	changed []string
}

// bridgeNetfilter are the sysctls that make the kernel pass bridged
// traffic (one replica to another on the same bridge) through iptables
// and ip6tables. br_netfilter makes them; they are per network namespace.
var bridgeNetfilter = []string{
	"/proc/sys/net/bridge/bridge-nf-call-iptables",
	"/proc/sys/net/bridge/bridge-nf-call-ip6tables",
}

// NewFirewall returns a Firewall for the chains of bridge, whose name
// must be plain (letters, digits, '_', '.', '-'; at most 15). log may be
// nil.
func NewFirewall(bridge string, log *slog.Logger) (*Firewall, error) {
	if !plainName.MatchString(bridge) {
		return nil, fmt.Errorf("replica policy: bridge %q: want at most 15 letters, digits, '_', '.' or '-'", bridge)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Firewall{bridge: bridge, log: log}, nil
}

// Apply makes the namespace's filter tables hold p, which must be
// BuildPolicy's for the Firewall's bridge: its chains created or
// replaced, its jumps first in INPUT and FORWARD (once each), and the
// bridge's chains that p no longer has deleted. It first makes sure that
// bridged traffic passes through iptables (br_netfilter), without which
// replicas on one node would reach each other unchecked.
func (f *Firewall) Apply(ctx context.Context, p Policy) error {
	if err := f.bridgeNetfilter(ctx); err != nil {
		return err
	}
	for _, fam := range []struct {
		v6     bool
		chains []Chain
		jumps  []Jump
	}{{false, p.Chains, p.Jumps}, {true, p.Chains6, p.Jumps6}} {
		saved, err := f.save(ctx, fam.v6)
		if err != nil {
			return err
		}
		script := restoreScript(f.bridge, saved, fam.chains, fam.jumps)
		if err := f.restore(ctx, fam.v6, script); err != nil {
			return err
		}
	}
	return nil
}

// Remove deletes the bridge's chains and the jumps into them, and turns
// off the sysctls Apply turned on. Without chains of the bridge it does
// nothing.
func (f *Firewall) Remove(ctx context.Context) error {
	var errs []error
	for _, v6 := range []bool{false, true} {
		saved, err := f.save(ctx, v6)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if script := restoreScript(f.bridge, saved, nil, nil); script != "" {
			errs = append(errs, f.restore(ctx, v6, script))
		}
	}
	for _, path := range f.changed {
		if err := os.WriteFile(path, []byte("0\n"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("replica policy: restore %s: %w", path, err))
		}
	}
	f.changed = nil
	return errors.Join(errs...)
}

// bridgeNetfilter turns on the bridge-nf-call sysctls, loading
// br_netfilter when they are missing.
func (f *Firewall) bridgeNetfilter(ctx context.Context) error {
	if _, err := os.Stat(bridgeNetfilter[0]); errors.Is(err, os.ErrNotExist) {
		out, err := exec.CommandContext(ctx, "modprobe", "br_netfilter").CombinedOutput()
		if _, serr := os.Stat(bridgeNetfilter[0]); serr != nil {
			return fmt.Errorf("replica policy: the kernel does not pass bridged traffic to iptables, and modprobe br_netfilter failed (%v: %s): load br_netfilter, then start the agent again", err, bytes.TrimSpace(out))
		}
		f.log.Info("replica policy: loaded br_netfilter")
	}
	for _, path := range bridgeNetfilter {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("replica policy: %w", err)
		}
		if strings.TrimSpace(string(b)) == "1" {
			continue
		}
		if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
			return fmt.Errorf("replica policy: turn on %s: %w", path, err)
		}
		f.log.Info("replica policy: bridged traffic now passes through iptables", "sysctl", path)
		if !slices.Contains(f.changed, path) {
			f.changed = append(f.changed, path)
		}
	}
	return nil
}

func tool(v6 bool, name string) string {
	if v6 {
		return "ip6tables-" + name
	}
	return "iptables-" + name
}

// save returns the filter table as iptables-save prints it.
func (f *Firewall) save(ctx context.Context, v6 bool) (string, error) {
	cmd := exec.CommandContext(ctx, tool(v6, "save"), "-t", "filter")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("replica policy: %s: %w: %s", cmd, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return string(out), nil
}

// restore feeds script to iptables-restore, without flushing what the
// script does not name; -w waits for the xtables lock that the legacy
// back end shares with CNI's plugins.
func (f *Firewall) restore(ctx context.Context, v6 bool, script string) error {
	cmd := exec.CommandContext(ctx, tool(v6, "restore"), "-w", "--noflush")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("replica policy: %s: %w: %s", cmd, err, bytes.TrimSpace(out))
	}
	return nil
}

// restoreScript is the iptables-restore input that turns the filter table
// saved (iptables-save's output) into one holding chains and jumps for
// bridge: every chain of the bridge declared (which creates or flushes
// it) and refilled, every jump into the bridge's chains from a built-in
// chain deleted and the new ones inserted first, and the bridge's chains
// not in chains deleted. With no chains it removes the bridge's policy;
// it returns "" when there is nothing to do for that.
func restoreScript(bridge, saved string, chains []Chain, jumps []Jump) string {
	have, oldJumps := ownedIn(bridge, saved)
	if len(chains) == 0 && len(have) == 0 && len(oldJumps) == 0 {
		return ""
	}
	want := map[string]bool{}
	var b strings.Builder
	b.WriteString("*filter\n")
	for _, c := range chains {
		want[c.Name] = true
		fmt.Fprintf(&b, ":%s - [0:0]\n", c.Name)
	}
	var stale []string
	for _, name := range have {
		if !want[name] {
			stale = append(stale, name)
			fmt.Fprintf(&b, ":%s - [0:0]\n", name)
		}
	}
	for _, j := range oldJumps {
		fmt.Fprintf(&b, "-D %s\n", j)
	}
	for _, c := range chains {
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "-A %s %s\n", c.Name, r)
		}
	}
	// Inserted at the top in reverse, so that they end up in order.
	for _, j := range slices.Backward(jumps) {
		fmt.Fprintf(&b, "-I %s 1 %s\n", j.From, j.Rule)
	}
	for _, name := range stale {
		fmt.Fprintf(&b, "-X %s\n", name)
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// ownedIn returns, from iptables-save's output of the filter table, the
// bridge's chains, and the rules of other chains that jump into them (as
// "CHAIN RULE", ready for -D).
func ownedIn(bridge, saved string) (chains, jumps []string) {
	sc := bufio.NewScanner(strings.NewReader(saved))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			if Owned(bridge, name) {
				chains = append(chains, name)
			}
		case strings.HasPrefix(line, "-A "):
			f := strings.Fields(line)
			from := f[1]
			if Owned(bridge, from) || len(f) < 4 {
				continue
			}
			// The target is the word after the last -j or -g.
			for i := len(f) - 2; i >= 2; i-- {
				if f[i] == "-j" || f[i] == "-g" {
					if Owned(bridge, f[i+1]) {
						jumps = append(jumps, strings.TrimPrefix(line, "-A "))
					}
					break
				}
			}
		}
	}
	return chains, jumps
}
