package keyed

import (
	"sync"
	"testing"
)

func TestMutexSerializesOneKeyAndForgetsIt(t *testing.T) {
	var m Mutex
	var wg sync.WaitGroup
	counts := map[string]int{}
	var cmu sync.Mutex
	for i := range 100 {
		key := []string{"a", "b"}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock := m.Lock(key)
			defer unlock()
			cmu.Lock()
			counts[key]++
			cmu.Unlock()
		}()
	}
	wg.Wait()
	if counts["a"] != 50 || counts["b"] != 50 {
		t.Errorf("counts %v", counts)
	}
	if len(m.locks) != 0 {
		t.Errorf("%d entries left after every unlock", len(m.locks))
	}
}
