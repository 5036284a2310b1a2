// Package k8s is hotgpud's node agent for GPUAttachments (api/hotgpu/v1alpha1):
// it watches its own node's pods and the attachments of pods on its node, and
// carries each attachment out through internal/attach, exactly as the node
// CLI's attach does (same Manager, same ledger). It is the only package of the
// daemon that imports client-go; internal/daemon wires it in when a
// kubeconfig or an in-cluster config is there.
//
// What it watches, so that it scales to thousands of nodes: pods with the
// field selector spec.nodeName=<node>, attachments with the label selector
// hotgpu.dev/node=<node>, and attachments that carry no node label yet (the
// kubectl plugin sets the label at creation; only attachments created some
// other way lack it, until their node's agent sets it). No agent lists or
// watches every attachment of the cluster.
//
// It is not the place for attach mechanics (internal/attach, internal/hotplug)
// nor for the node-local API (internal/apiserver).
package k8s
