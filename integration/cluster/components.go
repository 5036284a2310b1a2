package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// pkiFiles are the files the components are started with.
type pkiFiles struct {
	CA                                  string
	APIServerCert, APIServerKey         string
	KubeletClientCert, KubeletClientKey string // the API server's client cert for kubelets
	SAKey, SAPub                        string
	KubeletCert, KubeletKey             string // the kubelet's serving cert
	ControllerManager, Scheduler        string // kubeconfigs
	Kubelet                             string // kubeconfig
}

func (c *Cluster) writePKI(nodeIP net.IP) (*pkiFiles, error) {
	dir := c.path("pki")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var err error
	if c.ca, err = newCA(); err != nil {
		return nil, err
	}
	f := &pkiFiles{CA: c.path("pki", "ca.crt")}
	if err := os.WriteFile(f.CA, c.ca.pem, 0o644); err != nil {
		return nil, err
	}
	port, err := freePort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	c.Server = "https://127.0.0.1:" + port
	// 10.96.0.1 is the kubernetes Service's IP in --service-cluster-ip-range.
	ips := []net.IP{net.ParseIP("127.0.0.1"), nodeIP, net.ParseIP("10.96.0.1")}
	certs := []struct {
		pair       func() (keyPair, error)
		name       string
		cert, key  *string
		kubeconfig *string
	}{
		{func() (keyPair, error) {
			return c.ca.server("kube-apiserver", ips, "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")
		}, "apiserver", &f.APIServerCert, &f.APIServerKey, nil},
		{func() (keyPair, error) { return c.ca.client("kube-apiserver-kubelet-client", "system:masters") },
			"apiserver-kubelet-client", &f.KubeletClientCert, &f.KubeletClientKey, nil},
		{func() (keyPair, error) { return c.ca.server(c.NodeName, []net.IP{nodeIP}, c.NodeName) },
			"kubelet", &f.KubeletCert, &f.KubeletKey, nil},
		{func() (keyPair, error) { return c.ca.client("hotgpu-admin", "system:masters") },
			"admin", nil, nil, &c.AdminKubeconfig},
		{func() (keyPair, error) { return c.ca.client("system:kube-controller-manager") },
			"controller-manager", nil, nil, &f.ControllerManager},
		{func() (keyPair, error) { return c.ca.client("system:kube-scheduler") },
			"scheduler", nil, nil, &f.Scheduler},
		{func() (keyPair, error) { return c.ca.client("system:node:"+c.NodeName, "system:nodes") },
			"kubelet-client", nil, nil, &f.Kubelet},
	}
	for _, x := range certs {
		pair, err := x.pair()
		if err != nil {
			return nil, err
		}
		if x.name == "admin" {
			if c.client, err = newClient(c.Server, c.ca.pem, pair); err != nil {
				return nil, err
			}
		}
		if x.kubeconfig != nil {
			*x.kubeconfig = c.path("pki", x.name+".kubeconfig")
			if err := writeKubeconfig(*x.kubeconfig, c.Server, c.ca.pem, pair); err != nil {
				return nil, err
			}
			continue
		}
		if *x.cert, *x.key, err = pair.write(dir, x.name); err != nil {
			return nil, err
		}
	}
	if f.SAKey, f.SAPub, err = serviceAccountKey(dir); err != nil {
		return nil, err
	}
	return f, nil
}

func (c *Cluster) startEtcd() (string, error) {
	client, err := freePort("127.0.0.1")
	if err != nil {
		return "", err
	}
	peer, err := freePort("127.0.0.1")
	if err != nil {
		return "", err
	}
	url, peerURL := "http://127.0.0.1:"+client, "http://127.0.0.1:"+peer
	return url, c.run("etcd", c.opts.Bins.Etcd, nil,
		"--name", "hotgpu-it", "--data-dir", c.path("etcd"),
		"--listen-client-urls", url, "--advertise-client-urls", url,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "hotgpu-it="+peerURL,
		// Throw-away state: fsync buys nothing and costs seconds on a busy disk.
		"--unsafe-no-fsync", "--log-level", "warn")
}

func (c *Cluster) startAPIServer(ctx context.Context, f *pkiFiles, etcdURL string, nodeIP net.IP) error {
	port := c.Server[strings.LastIndex(c.Server, ":")+1:]
	err := c.run("kube-apiserver", c.opts.Bins.APIServer, nil,
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--secure-port", port,
		// The kubernetes Service's endpoint: must not be loopback.
		"--advertise-address", nodeIP.String(),
		"--cert-dir", c.path("apiserver"),
		"--tls-cert-file", f.APIServerCert, "--tls-private-key-file", f.APIServerKey,
		"--client-ca-file", f.CA,
		"--kubelet-client-certificate", f.KubeletClientCert, "--kubelet-client-key", f.KubeletClientKey,
		"--kubelet-certificate-authority", f.CA,
		"--kubelet-preferred-address-types", "InternalIP",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", f.SAPub, "--service-account-signing-key-file", f.SAKey,
		"--service-cluster-ip-range", "10.96.0.0/24",
		"--authorization-mode", "Node,RBAC",
		"--enable-admission-plugins", "NodeRestriction",
		"--anonymous-auth=false",
		"--allow-privileged=true",
		"--profiling=false",
		"--v", "1")
	if err != nil {
		return err
	}
	return c.waitAPIServer(ctx)
}

// waitAPIServer waits until /readyz answers ok (etcd reached, bootstrap RBAC
// and priority classes in place).
func (c *Cluster) waitAPIServer(ctx context.Context) error {
	cl := c.client
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var last error
	for {
		body, err := cl.Raw(ctx, "GET", "/readyz", nil)
		if err == nil && strings.TrimSpace(string(body)) == "ok" {
			return nil
		}
		last = err
		if c.procs[len(c.procs)-1].exited() {
			return fmt.Errorf("kube-apiserver exited:\n%s", c.procs[len(c.procs)-1].logTail(30))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready: %v\n%s", last, c.LogTails(20))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *Cluster) startControllers(f *pkiFiles) error {
	err := c.run("kube-controller-manager", c.opts.Bins.ControllerManager, nil,
		"--kubeconfig", f.ControllerManager,
		"--use-service-account-credentials",
		"--service-account-private-key-file", f.SAKey, "--root-ca-file", f.CA,
		// The default 20/30 take ~8 s to untaint the new node.
		"--kube-api-qps", "200", "--kube-api-burst", "400",
		"--leader-elect=false", "--secure-port", "0",
		"--flex-volume-plugin-dir", c.path("flexvolume"),
		"--node-monitor-period", "1s",
		"--v", "1")
	if err != nil {
		return err
	}
	return c.run("kube-scheduler", c.opts.Bins.Scheduler, nil,
		"--kubeconfig", f.Scheduler, "--leader-elect=false", "--secure-port", "0", "--v", "1")
}
