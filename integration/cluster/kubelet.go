package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// writeCNI gives the harness containerd a pod network: without a CNI config
// the node stays NotReady, and kubelet probes pods at their IPs. ptp makes a
// veth pair per pod with a host route to its IP, so the host (and only the
// host: no masquerading, no bridge) reaches every pod. It turns on the
// host's ip_forward, which Cleanup puts back.
func (c *Cluster) writeCNI() error {
	ctr := c.opts.Containerd
	bin, conf := filepath.Join(ctr.Dir, "cni", "bin"), filepath.Join(ctr.Dir, "cni", "net.d")
	for _, d := range []string{bin, conf} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for _, p := range []string{"ptp", "host-local", "loopback"} {
		if err := os.Symlink(filepath.Join(c.opts.Bins.CNIDir, p), filepath.Join(bin, p)); err != nil && !os.IsExist(err) {
			return fmt.Errorf("failed to install CNI plugin %s: %w", p, err)
		}
	}
	cfg, err := json.Marshal(map[string]any{
		"cniVersion": "1.0.0",
		// libcni names its result cache files after the network.
		"name": "hotgpu-it-" + strings.TrimPrefix(filepath.Base(c.Dir), "hgk8s-"),
		"plugins": []map[string]any{{
			"type": "ptp",
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": "10.244.0.0/24"}}},
				"dataDir": c.path("cni-ipam"),
			},
		}},
	})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(conf, "10-hotgpu-it.conflist"), cfg, 0o644)
}

func (c *Cluster) kubeletConfig(f *pkiFiles, nodeIP net.IP) (string, error) {
	port, err := freePort(nodeIP.String())
	if err != nil {
		return "", err
	}
	return `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://` + c.opts.Containerd.Address + `
cgroupDriver: cgroupfs
# Pods go straight under the harness containerd's cgroup, which its
# cleanup empties and removes.
cgroupsPerQOS: false
# Without pod cgroups kubelet 1.34.4 has no pod cgroup config to resize, and
# its in-place resize (on by default) dereferences it: a pod with CPU or
# memory limits (hotgpu's holder pods have them) crashed it once in
# doPodResizeAction. No test resizes a pod.
featureGates:
  InPlacePodVerticalScaling: false
cgroupRoot: ` + c.opts.Containerd.CgroupParent + `
enforceNodeAllocatable: []
failSwapOn: false
address: ` + nodeIP.String() + `
port: ` + port + `
readOnlyPort: 0
healthzPort: 0
tlsCertFile: ` + f.KubeletCert + `
tlsPrivateKeyFile: ` + f.KubeletKey + `
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ` + f.CA + `}
authorization: {mode: Webhook}
# Device counts reach the node status within ~2 s.
nodeStatusUpdateFrequency: 2s
syncFrequency: 5s
podLogsDir: ` + c.path("pod-logs") + `
volumePluginDir: ` + c.path("volume-plugins") + `
evictionHard: {memory.available: "0%", nodefs.available: "0%", imagefs.available: "0%", nodefs.inodesFree: "0%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: ""
`, nil
}

func (c *Cluster) startKubelet(f *pkiFiles, nodeIP net.IP) error {
	cfg, err := c.kubeletConfig(f, nodeIP)
	if err != nil {
		return err
	}
	cfgPath := c.path("kubelet.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	labels := make([]string, 0, len(c.opts.NodeLabels))
	for k, v := range c.opts.NodeLabels {
		labels = append(labels, k+"="+v)
	}
	sort.Strings(labels)
	args := []string{
		"--config", cfgPath,
		"--kubeconfig", f.Kubelet,
		"--root-dir", c.KubeletRootDir,
		"--cert-dir", c.path("kubelet-pki"),
		"--hostname-override", c.NodeName,
		"--node-ip", nodeIP.String(),
		"--v", "2",
	}
	if len(labels) > 0 {
		args = append(args, "--node-labels", strings.Join(labels, ","))
	}
	return c.run("kubelet", c.opts.Bins.Kubelet, nil, args...)
}

// waitNodeReady waits until the node is Ready and carries no taint (the
// node lifecycle controller removes not-ready once it saw Ready), and the
// default namespace's service account exists (pods need it to be admitted).
func (c *Cluster) waitNodeReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var last string
	for {
		var node corev1.Node
		err := c.client.Get(ctx, "/api/v1/nodes/"+c.NodeName, &node)
		switch {
		case err != nil:
			last = err.Error()
		case !NodeReady(&node):
			last = "node not Ready"
		case len(node.Spec.Taints) > 0:
			last = fmt.Sprintf("node tainted: %v", node.Spec.Taints)
		default:
			var sa corev1.ServiceAccount
			if err := c.client.Get(ctx, "/api/v1/namespaces/default/serviceaccounts/default", &sa); err == nil {
				return nil
			}
			last = "no default service account yet"
		}
		for _, p := range c.procs {
			if p.exited() {
				return fmt.Errorf("%s exited:\n%s", p.name, p.logTail(30))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s not ready and schedulable: %s\n%s", c.NodeName, last, c.LogTails(20))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// NodeReady reports whether the node's Ready condition is True.
func NodeReady(n *corev1.Node) bool {
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}
