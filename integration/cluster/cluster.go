package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hotgpu/hotgpu/integration/harness"
)

// Options configure a cluster. Bins and Containerd are required.
type Options struct {
	Bins       *Bins
	Containerd *harness.Containerd
	// NodeName is the kubelet's node (default "hotgpu-node").
	NodeName string
	// NodeLabels are set by the kubelet when it registers the node.
	NodeLabels map[string]string
}

// Cluster is a running single-node cluster; every file it writes is under
// Dir, except the host paths in hostpaths.go, which Cleanup puts back.
type Cluster struct {
	Dir             string
	Server          string // https://127.0.0.1:PORT
	AdminKubeconfig string // user hotgpu-admin, group system:masters
	NodeName        string
	NodeIP          string // the default route's source address: kubelet's node IP
	KubeletRootDir  string // pod-resources/kubelet.sock is here

	opts       Options
	ca         *ca
	kubectlEnv []string
	client     *Client
	procs      []*process // in start order
	hostPaths  []*hostPath
	sysctls    []*sysctl
}

// Start starts etcd, the API server, the controller manager, the scheduler
// and a kubelet registered with the API server in front of opts.Containerd,
// and waits until the node is Ready and schedulable. On error it cleans up.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Bins == nil || opts.Containerd == nil {
		return nil, errors.New("cluster.Options.Bins and Containerd are required")
	}
	if opts.NodeName == "" {
		opts.NodeName = "hotgpu-node"
	}
	dir, err := os.MkdirTemp("", "hgk8s-")
	if err != nil {
		return nil, fmt.Errorf("failed to create cluster dir: %w", err)
	}
	c := &Cluster{Dir: dir, NodeName: opts.NodeName, opts: opts, KubeletRootDir: filepath.Join(dir, "kubelet")}
	if err := c.start(ctx); err != nil {
		return nil, errors.Join(err, c.Cleanup())
	}
	return c, nil
}

func (c *Cluster) start(ctx context.Context) error {
	if err := c.claimHostPaths(); err != nil {
		return err
	}
	ip, err := defaultRouteIP()
	if err != nil {
		return err
	}
	c.NodeIP = ip.String()
	pki, err := c.writePKI(ip)
	if err != nil {
		return err
	}
	if err := c.writeCNI(); err != nil {
		return err
	}
	etcdURL, err := c.startEtcd()
	if err != nil {
		return err
	}
	if err := c.startAPIServer(ctx, pki, etcdURL, ip); err != nil {
		return err
	}
	if err := c.startControllers(pki); err != nil {
		return err
	}
	if err := c.startKubelet(pki, ip); err != nil {
		return err
	}
	return c.waitNodeReady(ctx)
}

// claimHostPaths refuses to share the device-plugins dir with a kubelet that
// already serves it and remembers the host paths to put back.
func (c *Cluster) claimHostPaths() error {
	sock := filepath.Join(DevicePluginDir, "kubelet.sock")
	if conn, err := net.DialTimeout("unix", sock, time.Second); err == nil {
		conn.Close()
		return fmt.Errorf("a kubelet already serves %s on this host; the cluster needs the device-plugins dir to itself", sock)
	}
	for _, p := range []string{DevicePluginDir, filepath.Join(cniCacheDir, "results"), containerLogs} {
		h, err := guardHostPath(p)
		if err != nil {
			return err
		}
		c.hostPaths = append(c.hostPaths, h)
	}
	s, err := guardSysctl(ipForward)
	if err != nil {
		return err
	}
	c.sysctls = append(c.sysctls, s)
	return nil
}

// defaultRouteIP is the source address of the default route: the kubelet's
// node IP cannot be loopback. Connecting a UDP socket sends nothing.
func defaultRouteIP() (net.IP, error) {
	conn, err := net.Dial("udp4", "192.0.2.1:9")
	if err != nil {
		return nil, fmt.Errorf("failed to find the default route's source address (the node IP): %w", err)
	}
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).IP, nil
}

// freePort returns a port free on ip now.
func freePort(ip string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return "", fmt.Errorf("failed to find a free port: %w", err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port), nil
}

func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.Dir}, elem...)...)
}

func (c *Cluster) run(name, bin string, env []string, args ...string) error {
	p := &process{name: name, bin: bin, args: args, env: env, log: c.path(name + ".log")}
	if err := p.start(); err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	return nil
}

// Cleanup stops every component (the kubelet first, etcd last), then
// cleans up the containerd (its pods go, and their CNI results with them:
// it cannot serve another cluster), removes the cluster dir and puts the
// host paths back.
func (c *Cluster) Cleanup() error {
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop(10 * time.Second)
	}
	var errs []error
	if err := c.opts.Containerd.Cleanup(); err != nil {
		errs = append(errs, err)
	}
	if err := harness.UnmountUnder(c.Dir); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		errs = append(errs, err)
	}
	for _, h := range c.hostPaths {
		errs = append(errs, h.restore())
	}
	for _, s := range c.sysctls {
		errs = append(errs, s.restore())
	}
	return errors.Join(errs...)
}

// Pids are the component processes still running (none after Cleanup).
func (c *Cluster) Pids() []int {
	var pids []int
	for _, p := range c.procs {
		if !p.exited() {
			pids = append(pids, p.cmd.Process.Pid)
		}
	}
	return pids
}

// LogTails returns the last n lines of every component's log.
func (c *Cluster) LogTails(n int) string {
	var b strings.Builder
	for _, p := range c.procs {
		fmt.Fprintf(&b, "--- %s (%s):\n%s\n", p.name, p.log, p.logTail(n))
	}
	return b.String()
}

// LogPath is the log file of a component: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler or kubelet.
func (c *Cluster) LogPath(component string) string { return c.path(component + ".log") }
