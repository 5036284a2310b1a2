// Package systemd tells systemd which devices a container may use when its
// cgroup is a systemd scope (the systemd cgroup driver of runc, containerd
// and kubelet). systemd owns such a scope and re-applies its DeviceAllow=
// list whenever it re-realizes the unit (`systemctl daemon-reload`, a
// property change): a device granted only in the cgroup is then lost. So
// each live grant and revoke is also written to the unit, as runc's systemd
// driver writes the container's rules at start.
//
// It is the only package that speaks systemd's D-Bus API. It does not touch
// cgroups (internal/hotplug does) and does not decide who holds what.
package systemd

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/opencontainers/cgroups"
	// The devices package registers systemd.GenerateDeviceProps: the
	// DevicePolicy/DeviceAllow properties runc's systemd driver sets.
	_ "github.com/opencontainers/cgroups/devices"
	devices "github.com/opencontainers/cgroups/devices/config"
	cgsystemd "github.com/opencontainers/cgroups/systemd"
)

// callTimeout bounds each D-Bus call: a hung systemd must not hang attach.
const callTimeout = 10 * time.Second

// UnitOf returns the systemd unit that owns a container's cgroup (a path as
// in /proc/<pid>/cgroup): its last element when that is a scope, as runc's
// systemd driver names it ("cri-containerd-<id>.scope"), else "".
func UnitOf(cgroup string) string {
	name := path.Base(cgroup)
	if !strings.HasSuffix(name, ".scope") || name == ".scope" {
		return ""
	}
	return name
}

// Running reports whether systemd is the init system here, as runc decides
// it: /run/systemd/system exists.
func Running() bool { return cgsystemd.IsRunningSystemd() }

// NodePath names one character device in DeviceAllow=, as runc does for a
// rule with a major and a minor.
func NodePath(major, minor int64) string {
	return "/dev/char/" + strconv.FormatInt(major, 10) + ":" + strconv.FormatInt(minor, 10)
}

// Manager is a connection to systemd's manager, made on first use and made
// again after an error (systemd or the bus restarted). It is safe for
// concurrent use.
type Manager struct {
	mu      sync.Mutex
	conn    *sd.Conn
	version int
	connect func(context.Context) (*sd.Conn, error)
}

// New returns a Manager that connects to the system bus, or straight to
// systemd's private socket when no bus runs (root only), as runc does.
// DBUS_SYSTEM_BUS_ADDRESS names another bus.
func New() *Manager { return &Manager{connect: sd.NewWithContext} }

// Close closes the connection, if any.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conn != nil {
		m.conn.Close()
		m.conn = nil
	}
}

// SetDevices makes rules the whole device access of unit: the properties
// runc's systemd driver computes from them (an empty DeviceAllow= first,
// which clears the list, then DevicePolicy=strict and one DeviceAllow= per
// rule), set for the runtime of the unit. systemd applies them at once and
// again at every daemon-reload.
func (m *Manager) SetDevices(unit string, rules []*devices.Rule) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	conn, err := m.dial()
	if err != nil {
		return err
	}
	props, err := cgsystemd.GenerateDeviceProps(&cgroups.Resources{Devices: rules}, m.version)
	if err != nil {
		return fmt.Errorf("failed to build systemd device properties for %s: %w", unit, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := conn.SetUnitPropertiesContext(ctx, unit, true, props...); err != nil {
		m.drop()
		return fmt.Errorf("failed to set the device access of systemd unit %s: %w", unit, err)
	}
	return nil
}

// Allowed returns unit's DeviceAllow= list: device path to permissions.
func (m *Manager) Allowed(unit string) (map[string]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	conn, err := m.dial()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	p, err := conn.GetUnitTypePropertyContext(ctx, unit, unitType(unit), "DeviceAllow")
	if err != nil {
		m.drop()
		return nil, fmt.Errorf("failed to read DeviceAllow of systemd unit %s: %w", unit, err)
	}
	return parseAllow(p.Value.Value())
}

// Allows reports whether unit's DeviceAllow= lets the container read or
// write the character device major:minor.
func (m *Manager) Allows(unit string, major, minor int64) (bool, error) {
	allowed, err := m.Allowed(unit)
	if err != nil {
		return false, err
	}
	for _, p := range []string{NodePath(major, minor), "char-" + strconv.FormatInt(major, 10), "char-*"} {
		if strings.ContainsAny(allowed[p], "rw") {
			return true, nil
		}
	}
	return false, nil
}

func (m *Manager) dial() (*sd.Conn, error) {
	if m.conn != nil {
		return m.conn, nil
	}
	// The connection lives as long as its context: not a call's timeout.
	conn, err := m.connect(context.Background())
	if err != nil {
		return nil, fmt.Errorf("failed to connect to systemd over D-Bus (is systemd the init system and dbus running?): %w", err)
	}
	v, err := conn.GetManagerProperty("Version")
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("failed to read systemd's version: %w", err)
	}
	if m.version, err = parseVersion(v); err != nil {
		conn.Close()
		return nil, err
	}
	m.conn = conn
	return conn, nil
}

// drop forgets the connection after a failed call, so that the next call
// connects again.
func (m *Manager) drop() {
	if m.conn != nil && !m.conn.Connected() {
		m.conn.Close()
		m.conn = nil
	}
}

// parseVersion reads systemd's version property (`"252.38-1~deb12u1"`).
func parseVersion(s string) (int, error) {
	s = strings.TrimLeft(s, `"v`)
	end := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	if end >= 0 {
		s = s[:end]
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("failed to read systemd's version %q: %w", s, err)
	}
	return v, nil
}

// unitType is the D-Bus interface suffix of unit's type: "Scope" for
// "x.scope".
func unitType(unit string) string {
	t := strings.TrimPrefix(path.Ext(unit), ".")
	if t == "" {
		return "Unit"
	}
	return strings.ToUpper(t[:1]) + t[1:]
}

// parseAllow reads a D-Bus a(ss) DeviceAllow value.
func parseAllow(v any) (map[string]string, error) {
	rows, ok := v.([][]any)
	if !ok {
		return nil, fmt.Errorf("unexpected DeviceAllow value %T from systemd", v)
	}
	out := make(map[string]string, len(rows))
	for _, row := range rows {
		if len(row) != 2 {
			return nil, errors.New("unexpected DeviceAllow entry from systemd")
		}
		p, ok1 := row[0].(string)
		perms, ok2 := row[1].(string)
		if !ok1 || !ok2 {
			return nil, errors.New("unexpected DeviceAllow entry from systemd")
		}
		out[p] += perms
	}
	return out, nil
}
