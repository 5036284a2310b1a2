package systemd

import (
	"maps"
	"testing"
)

func TestUnitOf(t *testing.T) {
	for cgroup, want := range map[string]string{
		"/system.slice/cri-containerd-abc.scope":                      "cri-containerd-abc.scope",
		"/kubepods.slice/kubepods-pod1.slice/cri-containerd-ab.scope": "cri-containerd-ab.scope",
		"/k8s.io/abc":   "",
		"/system.slice": "",
		"/.scope":       "",
	} {
		if got := UnitOf(cgroup); got != want {
			t.Errorf("UnitOf(%q) = %q, want %q", cgroup, got, want)
		}
	}
}

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]int{`"252.38-1~deb12u1"`: 252, `"v257"`: 257, "239": 239} {
		got, err := parseVersion(in)
		if err != nil || got != want {
			t.Errorf("parseVersion(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := parseVersion(`"x"`); err == nil {
		t.Error("parseVersion accepted a version without a number")
	}
}

func TestParseAllow(t *testing.T) {
	got, err := parseAllow([][]any{{"/dev/char/195:1", "rw"}, {"char-*", "m"}, {"/dev/char/195:1", "m"}})
	want := map[string]string{"/dev/char/195:1": "rwm", "char-*": "m"}
	if err != nil || !maps.Equal(got, want) {
		t.Fatalf("parseAllow = %v, %v; want %v", got, err, want)
	}
	for name, bad := range map[string]any{"type": []string{"x"}, "short": [][]any{{"a"}}, "not strings": [][]any{{1, 2}}} {
		if _, err := parseAllow(bad); err == nil {
			t.Errorf("%s: parseAllow accepted %v", name, bad)
		}
	}
}
