package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hotgpuv1 "github.com/hotgpu/hotgpu/api/hotgpu/v1alpha1"
)

type lsOptions struct {
	*options
	allNamespaces bool
}

// listing is what ls prints with -o json|yaml.
type listing struct {
	Attachments []*hotgpuv1.GPUAttachment `json:"attachments"`
	// Nodes are the nodes offering nvidia.com/gpu; absent when the user may
	// not list nodes.
	Nodes []nodeGPUs `json:"nodes,omitempty"`
}

type nodeGPUs struct {
	Name        string `json:"name"`
	Capacity    int64  `json:"capacity"`
	Allocatable int64  `json:"allocatable"`
	// Attached are the node's live-attached GPUs, by holder (namespace/pod/container).
	Attached map[string][]int `json:"attached,omitempty"`
}

func newLs(o *options) *cobra.Command {
	l := &lsOptions{options: o}
	cmd := &cobra.Command{
		Use:   "ls [-A]",
		Short: "List GPU attachments, and each node's GPUs with their holders",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return l.run(cmd.Context()) },
	}
	cmd.Flags().BoolVarP(&l.allNamespaces, "all-namespaces", "A", false, "attachments of every namespace")
	return cmd
}

func (l *lsOptions) run(ctx context.Context) error {
	if err := l.checkOutput(); err != nil {
		return err
	}
	c, err := l.clients()
	if err != nil {
		return err
	}
	ns := c.namespace
	if l.allNamespaces {
		ns = metav1.NamespaceAll
	}
	list, err := c.attachments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	out := listing{Attachments: []*hotgpuv1.GPUAttachment{}}
	for i := range list.Items {
		a, err := decode(&list.Items[i])
		if err != nil {
			return err
		}
		out.Attachments = append(out.Attachments, a)
	}
	if out.Nodes, err = nodes(ctx, c, out.Attachments); err != nil {
		return err
	}
	return l.print(out, func(w io.Writer) { l.table(w, out) })
}

// nodes lists the GPU nodes; a user who may not list nodes sees none.
func nodes(ctx context.Context, c *clients, atts []*hotgpuv1.GPUAttachment) ([]nodeGPUs, error) {
	list, err := c.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if apierrors.IsForbidden(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []nodeGPUs
	for _, n := range list.Items {
		capacity := n.Status.Capacity[corev1.ResourceName("nvidia.com/gpu")]
		if capacity.IsZero() {
			continue
		}
		alloc := n.Status.Allocatable[corev1.ResourceName("nvidia.com/gpu")]
		ng := nodeGPUs{Name: n.Name, Capacity: capacity.Value(), Allocatable: alloc.Value(), Attached: map[string][]int{}}
		for _, a := range atts {
			if a.Status.NodeName == n.Name && len(a.Status.GPUs) > 0 {
				h := a.Namespace + "/" + a.Spec.PodName + "/" + a.Spec.Container
				ng.Attached[h] = append(ng.Attached[h], indexes(a)...)
			}
		}
		out = append(out, ng)
	}
	return out, nil
}

func (l *lsOptions) table(w io.Writer, out listing) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tPOD\tCONTAINER\tGPUS\tPHASE\tNODE\tMESSAGE")
	for _, a := range out.Attachments {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Namespace, a.Name, a.Spec.PodName,
			dash(a.Spec.Container), dash(strings.Trim(fmt.Sprint(indexes(a)), "[]")), dash(string(a.Status.Phase)),
			dash(a.Status.NodeName), a.Status.Message)
	}
	if len(out.Nodes) > 0 {
		fmt.Fprintln(tw, "\nNODE\tCAPACITY\tALLOCATABLE\tATTACHED")
		for _, n := range out.Nodes {
			var held []string
			for h, gpus := range n.Attached {
				held = append(held, fmt.Sprintf("%s=%v", h, gpus))
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", n.Name, n.Capacity, n.Allocatable, dash(strings.Join(held, " ")))
		}
	}
	_ = tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
