// Package cluster runs a real single-node Kubernetes for hotgpu's integration
// tests: etcd, kube-apiserver (Node,RBAC authorization, NodeRestriction),
// kube-controller-manager, kube-scheduler and a kubelet registered with the
// API server, in front of a harness containerd. Binaries come from
// integration/cluster-deps.sh (the Go module proxy, cached); certificates and
// the service-account key are generated here with crypto/x509.
//
// Everything lives in a private dir with private ports on 127.0.0.1 (the
// kubelet on the node IP); Cleanup stops every process and puts back the few
// host paths Kubernetes writes whatever its flags, and the ip_forward sysctl
// the ptp CNI plugin sets (hostpaths.go).
//
// It is not a general Kubernetes launcher: one node, no kube-proxy, no
// CoreDNS (Service IPs route nowhere), pod IPs reached from the host only.
package cluster
