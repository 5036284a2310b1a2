package hookenv

import "testing"

func TestNeedsClean(t *testing.T) {
	if NeedsClean(Env) {
		t.Fatal("Env itself needs cleaning")
	}
	for _, env := range [][]string{nil, append(append([]string{}, Env...), "LD_PRELOAD=/x.so"), {"PATH=/tmp"}, {Env[1], Env[0]}} {
		if !NeedsClean(env) {
			t.Errorf("NeedsClean(%q) = false", env)
		}
	}
}
