package network

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// The bridge plugin masquerades a replica's traffic through a nat chain
// of its own, CNI-<hash of the network's name and the attachment's ID>,
// which POSTROUTING jumps to. Its DEL removes the chain only when it finds
// the replica's address in the namespace, and an ADD that stopped between
// making the chain and adding the jump leaves a chain no jump names,
// which its DEL does not remove either. removeMasqChain, after every DEL,
// removes what is left of it, so that no replica's rules outlive it.

// masqChain is the nat chain the bridge plugin makes for attachment id:
// "CNI-" and the first 24 hex digits of SHA-512 of the network's name and
// the ID (the plugins' chain naming; the test pins it against a chain a
// plugin made).
func masqChain(network, id string) string {
	sum := sha512.Sum512([]byte(network + id))
	return "CNI-" + hex.EncodeToString(sum[:])[:24]
}

// masqCleanupScript is the iptables-restore input that deletes chain and
// every POSTROUTING jump to it from the nat table saved (iptables-save's
// output); "" when the table holds neither.
func masqCleanupScript(saved, chain string) string {
	var b strings.Builder
	exists := false
	for _, line := range strings.Split(saved, "\n") {
		switch {
		case strings.HasPrefix(line, ":"+chain+" "):
			exists = true
		case strings.HasPrefix(line, "-A POSTROUTING ") && strings.Contains(line+" ", " -j "+chain+" "):
			b.WriteString("-D" + strings.TrimPrefix(line, "-A") + "\n")
		}
	}
	if exists {
		b.WriteString("-F " + chain + "\n-X " + chain + "\n")
	}
	if b.Len() == 0 {
		return ""
	}
	return "*nat\n" + b.String() + "COMMIT\n"
}

// removeMasqChain removes what is left of the bridge plugin's masquerade
// chain for attachment id (see masqCleanupScript).
func removeMasqChain(ctx context.Context, network, id string) error {
	chain := masqChain(network, id)
	save := exec.CommandContext(ctx, "iptables-save", "-t", "nat")
	var stderr bytes.Buffer
	save.Stderr = &stderr
	out, err := save.Output()
	if err != nil {
		return fmt.Errorf("masquerade chain %s of %s: %s: %w: %s", chain, id, save, err, bytes.TrimSpace(stderr.Bytes()))
	}
	script := masqCleanupScript(string(out), chain)
	if script == "" {
		return nil
	}
	restore := exec.CommandContext(ctx, "iptables-restore", "-w", "--noflush")
	restore.Stdin = strings.NewReader(script)
	if out, err := restore.CombinedOutput(); err != nil {
		return fmt.Errorf("masquerade chain %s of %s: %s: %w: %s", chain, id, restore, err, bytes.TrimSpace(out))
	}
	return nil
}

// masqIDs returns the attachment IDs of network whose masquerade rules the
// nat table saved holds (the plugin's comment on each: name: "NETWORK"
// id: "ID"), in the order they first appear.
func masqIDs(saved, network string) []string {
	marker := `name: \"` + network + `\" id: \"`
	var ids []string
	seen := map[string]bool{}
	for _, line := range strings.Split(saved, "\n") {
		_, rest, ok := strings.Cut(line, marker)
		if !ok {
			continue
		}
		id, _, ok := strings.Cut(rest, `\"`)
		if ok && id != "" && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids
}

// removeStrayMasqChains removes the masquerade chains of network (this
// agent's, whose bridge it holds) that no attachment of explained names:
// left by an agent that is gone, whose DEL never ran.
func removeStrayMasqChains(ctx context.Context, network string, explained map[string]bool) error {
	out, err := exec.CommandContext(ctx, "iptables-save", "-t", "nat").Output()
	if err != nil {
		return fmt.Errorf("stray masquerade chains: iptables-save: %w", err)
	}
	var errs []error
	for _, id := range masqIDs(string(out), network) {
		if !explained[id] {
			errs = append(errs, removeMasqChain(ctx, network, id))
		}
	}
	return errors.Join(errs...)
}
