package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Host paths a cluster writes whatever its flags: kubelet's device-plugins
// dir and its container log symlinks' dir are compiled in, and libcni caches
// results under /var/lib/cni (the CRI plugin of containerd has no setting
// for it). Every other path the
// components would write by default (kubelet's pki and volume-plugin dirs,
// pod logs, the controller manager's flex-volume dir, kubectl's cache) is
// moved into the cluster dir by a flag.
// The ptp CNI plugin turns on ipForward for pods' traffic.
const (
	DevicePluginDir = "/var/lib/kubelet/device-plugins"
	cniCacheDir     = "/var/lib/cni"
	containerLogs   = "/var/log/containers"
	ipForward       = "/proc/sys/net/ipv4/ip_forward"
)

// hostPath remembers how a host path was before the cluster started so that
// teardown can put it back: a path that did not exist is removed from its
// highest missing ancestor down; in a dir that existed, only the entries
// that were not there are removed.
type hostPath struct {
	path    string
	created string // highest ancestor that did not exist, "" if path existed
	entries map[string]bool
}

func guardHostPath(path string) (*hostPath, error) {
	h := &hostPath{path: path, entries: map[string]bool{}}
	for p := path; p != "/"; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			h.created = p
		} else if err != nil {
			return nil, fmt.Errorf("failed to stat %s: %w", p, err)
		}
	}
	if h.created == "" {
		list, err := os.ReadDir(path)
		if err != nil {
			return nil, fmt.Errorf("failed to list %s: %w", path, err)
		}
		for _, e := range list {
			h.entries[e.Name()] = true
		}
	}
	return h, nil
}

// restore puts the path back as it was.
func (h *hostPath) restore() error {
	if h.created != "" {
		if err := os.RemoveAll(h.created); err != nil {
			return fmt.Errorf("failed to remove %s: %w", h.created, err)
		}
		return nil
	}
	list, err := os.ReadDir(h.path)
	if err != nil {
		return fmt.Errorf("failed to list %s: %w", h.path, err)
	}
	var errs []error
	for _, e := range list {
		if !h.entries[e.Name()] {
			errs = append(errs, os.RemoveAll(filepath.Join(h.path, e.Name())))
		}
	}
	return errors.Join(errs...)
}

// sysctl remembers a sysctl's value to put it back.
type sysctl struct{ path, value string }

func guardSysctl(path string) (*sysctl, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", path, err)
	}
	return &sysctl{path: path, value: string(b)}, nil
}

func (s *sysctl) restore() error {
	b, err := os.ReadFile(s.path)
	if err == nil && string(b) == s.value {
		return nil
	}
	if err := os.WriteFile(s.path, []byte(s.value), 0o644); err != nil {
		return fmt.Errorf("failed to put %s back to %q: %w", s.path, s.value, err)
	}
	return nil
}
