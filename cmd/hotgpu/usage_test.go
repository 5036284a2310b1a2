package main

import (
	"strings"
	"testing"
)

// Every command answers --help on stdout with exit 0, and the API commands
// refuse bad command lines (exit 2) before they talk to hotgpud.
func TestAPICommandsUsage(t *testing.T) {
	for _, c := range commands {
		t.Run(c.Name+" --help", func(t *testing.T) {
			code, stdout, _ := runCLI(c.Name, "--help")
			if code != 0 || !strings.Contains(stdout, "hotgpu "+c.Name) && c.Name != "cdi" {
				t.Fatalf("exit %d, stdout %q", code, stdout)
			}
		})
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"attach", "--count", "1"}, "exactly one of --container, --pod or --pid"},
		{[]string{"attach", "--pid", "3", "--container", "abc", "--count", "1"}, "exactly one of"},
		{[]string{"attach", "--pod", "justname", "--count", "1"}, "NAMESPACE/NAME"},
		{[]string{"attach", "--pod", "ns/p"}, "either --count or --gpu"},
		{[]string{"attach", "--pod", "ns/p", "--count", "1", "--gpu", "0"}, "either --count or --gpu"},
		{[]string{"attach", "--pod", "ns/p", "--count", "1", "-o", "yaml"}, "-o must be text or json"},
		{[]string{"attach", "--container-name", "x", "--pid", "3", "--count", "1"}, "--container-name goes with --pod"},
		{[]string{"detach", "--pod", "ns/p"}, "either --gpu or --all"},
		{[]string{"ls", "-o", "xml"}, "-o must be table or json"},
		{[]string{"status", "-o", "xml"}, "-o must be text or json"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, stderr := runCLI(append(tc.args, "--socket", "/nonexistent/hotgpu.sock")...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", code, stderr, tc.want)
			}
		})
	}
	// A well-formed command without a daemon says how to fix it (exit 1).
	code, _, stderr := runCLI("ls", "--socket", "/nonexistent/hotgpu.sock")
	if code != 1 || !strings.Contains(stderr, "is it running? are you root?") {
		t.Fatalf("no daemon: exit %d, stderr %q", code, stderr)
	}
}
