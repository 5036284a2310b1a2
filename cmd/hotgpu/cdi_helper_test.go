package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindCDIHelper(t *testing.T) {
	noPath := func(string) (string, error) { return "", errors.New("not on PATH") }
	bin := t.TempDir()
	self := filepath.Join(bin, "hotgpu")
	helper := filepath.Join(bin, cdiHelperName)
	must(t, os.WriteFile(self, nil, 0o755))
	if _, err := findCDIHelper(self, noPath); err == nil || !strings.Contains(err.Error(), "make install") || !strings.Contains(err.Error(), helper) {
		t.Errorf("no helper: %v, want an error saying where it should be and how to install it", err)
	}
	if got, err := findCDIHelper(self, func(string) (string, error) { return "/opt/bin/" + cdiHelperName, nil }); err != nil || got != "/opt/bin/"+cdiHelperName {
		t.Errorf("helper on PATH: %q %v", got, err)
	}
	must(t, os.WriteFile(helper, nil, 0o644))
	if got, err := findCDIHelper(self, noPath); err == nil {
		t.Errorf("a helper that is not executable was taken: %q", got)
	}
	must(t, os.Chmod(helper, 0o755))
	// Run through a symlink (/usr/bin/hotgpu -> /opt/hotgpu/bin/hotgpu): the
	// helper is found next to the real binary.
	link := filepath.Join(t.TempDir(), "hotgpu")
	must(t, os.Symlink(self, link))
	if got, err := findCDIHelper(link, noPath); err != nil || got != helper {
		t.Errorf("helper next to the binary: %q %v, want %s", got, err, helper)
	}
}

// TestRunHelper runs a stand-in hotgpu-cdi: it gets the command and the
// user's arguments, stdin and stdout, and its exit code is passed on silently.
func TestRunHelper(t *testing.T) {
	bin := t.TempDir()
	self := filepath.Join(bin, "hotgpu")
	must(t, os.WriteFile(self, nil, 0o755))
	script := "#!/bin/sh\necho \"argv0=$0 args=$* env=$" + cdiHelperEnv + "\"\ncat\necho oops >&2\nexit 3\n"
	must(t, os.WriteFile(filepath.Join(bin, cdiHelperName), []byte(script), 0o755))
	var out, errOut bytes.Buffer
	s := stdio{in: strings.NewReader("from stdin\n"), out: &out, err: &errOut}
	err := runHelper(context.Background(), s, self, nil, []string{"cdi", "generate", "--simulate", "dgxa100"})
	if code := exitCode(err, &errOut); code != 3 {
		t.Errorf("exit code %d (%v), want the helper's 3", code, err)
	}
	if want := "args=cdi generate --simulate dgxa100 env=1\nfrom stdin\n"; !strings.HasSuffix(out.String(), want) {
		t.Errorf("helper stdout %q, want it to end with %q", out.String(), want)
	}
	if errOut.String() != "oops\n" {
		t.Errorf("stderr %q: want only the helper's own message", errOut.String())
	}

	// Killed by a signal (SIGPIPE under `| head`): the shell's code, no message.
	must(t, os.WriteFile(filepath.Join(bin, cdiHelperName), []byte("#!/bin/sh\nkill -PIPE $$\n"), 0o755))
	errOut.Reset()
	err = runHelper(context.Background(), s, self, nil, []string{"list"})
	if code := exitCode(err, &errOut); code != 128+13 || errOut.Len() != 0 {
		t.Errorf("helper killed by SIGPIPE: exit %d, stderr %q; want 141 and nothing said", code, errOut.String())
	}

	t.Setenv(cdiHelperEnv, "1")
	if err := runHelper(context.Background(), s, self, nil, []string{"list"}); !errors.Is(err, errHelperLoop) {
		t.Errorf("started as the helper: %v, want %v", err, errHelperLoop)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
