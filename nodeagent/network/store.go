package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// record is what a store keeps: one JSON file per id.
type record interface {
	recordID() string
}

func (a Attachment) recordID() string { return a.ID }

// store keeps one JSON record per attachment (or pool entry) under dir, so
// that a new agent knows which netns path and id to hand CNI's DEL (which
// must match the ADD) and which host ports are taken.
//
// A record is written before the CNI ADD it describes and removed after
// the DEL, so every IP host-local hands out is findable from a record.
// Records are replaced by rename: an agent killed mid-write leaves the old
// record or the new one, never half of one. They are not fsynced: they
// describe kernel state (netns mounts, veths) that a reboot wipes anyway,
// so only a process crash must be survived, and the page cache does that.
type store[T record] struct {
	dir string
}

func (s store[T]) path(id string) string { return filepath.Join(s.dir, id+".json") }

func (s store[T]) put(a T) error {
	id := a.recordID()
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.dir, ".tmp-"+id+"-")
	if err != nil {
		return fmt.Errorf("write attachment record %s: %w", id, err)
	}
	_, werr := tmp.Write(b)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write attachment record %s: %w", id, err)
	}
	if err := os.Rename(tmp.Name(), s.path(id)); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write attachment record %s: %w", id, err)
	}
	return nil
}

// get returns the record of id, or ErrNotFound.
func (s store[T]) get(id string) (T, error) {
	var a T
	b, err := os.ReadFile(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return a, fmt.Errorf("attachment %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return a, fmt.Errorf("read attachment record %s: %w", id, err)
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return a, fmt.Errorf("read attachment record %s: %w", id, err)
	}
	return a, nil
}

func (s store[T]) remove(id string) error {
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove attachment record %s: %w", id, err)
	}
	return nil
}

// list returns every record, sorted by id. Unreadable records are
// returned as errors next to the readable ones.
func (s store[T]) list() ([]T, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list attachment records: %w", err)
	}
	var (
		out  []T
		errs []error
	)
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".tmp-") {
			// A write that never finished; its rename never happened, so
			// nothing refers to it.
			os.Remove(filepath.Join(s.dir, name))
			continue
		}
		id, ok := strings.CutSuffix(name, ".json")
		if !ok {
			continue
		}
		a, err := s.get(id)
		if err != nil {
			if !errors.Is(err, ErrNotFound) {
				errs = append(errs, err)
			}
			continue
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].recordID() < out[j].recordID() })
	return out, errors.Join(errs...)
}
