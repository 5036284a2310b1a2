package main

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseFlagsOverrideConfig(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "hotgpud.yaml")
	doc := "version: v1\nsimulate: pcie8\nstateDir: /var/lib/from-file\nannotations:\n  namespaces: [file]\n"
	if err := os.WriteFile(cfgPath, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := parse([]string{"--config", cfgPath, "--state-dir", "/tmp/flag", "--annotation-namespaces", "a, b", "--no-nri",
		"--driver-root", "/tmp/fake-driver", "--hook-path", "/tmp/bin/hotgpu-hook"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Simulate != "pcie8" {
		t.Errorf("file value lost: simulate = %q", cfg.Simulate)
	}
	if cfg.StateDir != "/tmp/flag" || !cfg.NRI.Disabled || !slices.Equal(cfg.Annotations.Namespaces, []string{"a", "b"}) ||
		cfg.DriverRoot != "/tmp/fake-driver" || cfg.HookPath != "/tmp/bin/hotgpu-hook" {
		t.Errorf("flags did not override: %+v", cfg)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--state-dir", "relative"}, "stateDir must be an absolute path"},
		{[]string{"--hook-path", "hotgpu-hook"}, "hookPath must be an absolute path"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--log-level", "loud"}, "invalid --log-level"},
		{[]string{"--annotation-namespaces", "Bad_NS"}, "not a Kubernetes namespace"},
		{[]string{"--config", "/nonexistent.yaml"}, "failed to read config"},
	} {
		_, _, err := parse(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parse(%v) err = %v, want %q", tc.args, err, tc.want)
		}
	}
	for _, arg := range []string{"--help", "--version"} {
		if _, _, err := parse([]string{arg}); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%s: %v (want to exit 0 without starting)", arg, err)
		}
	}
}
