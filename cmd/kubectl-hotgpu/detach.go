package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	hotgpuv1 "github.com/hotgpu/hotgpu/api/hotgpu/v1alpha1"
)

type detachOptions struct {
	*options
	container string
	gpus      []string
	all       bool
	force     bool
	wait      bool
	timeout   time.Duration
}

func newDetach(o *options) *cobra.Command {
	d := &detachOptions{options: o}
	cmd := &cobra.Command{
		Use:   "detach POD [-c CONTAINER] (--gpu ID,... | --all) [--force] [--wait]",
		Short: "Detach live-attached GPUs from a pod's container (deletes their GPUAttachments)",
		Long: `detach deletes the pod's GPUAttachments that hold the given GPUs (all of
them with --all). A GPU a process still holds is not detached (the attachment
stays, phase Detaching) unless --force: the GPU is then quarantined until the
process lets go.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return d.run(cmd.Context(), args[0]) },
	}
	f := cmd.Flags()
	f.StringVarP(&d.container, "container", "c", "", "only this container's attachments")
	f.StringSliceVar(&d.gpus, "gpu", nil, "detach these GPUs, by index or UUID")
	f.BoolVar(&d.all, "all", false, "detach every GPU attached to the pod (or container)")
	f.BoolVar(&d.force, "force", false, "detach even a GPU a process holds (detachPolicy Force)")
	f.BoolVar(&d.wait, "wait", false, "wait until the attachments are gone")
	f.DurationVar(&d.timeout, "timeout", 60*time.Second, "how long --wait waits")
	return cmd
}

func (d *detachOptions) run(ctx context.Context, pod string) error {
	if err := d.checkOutput(); err != nil {
		return err
	}
	if d.all == (len(d.gpus) > 0) {
		return errors.New("give exactly one of --gpu ID,... or --all")
	}
	c, err := d.clients()
	if err != nil {
		return err
	}
	sel, err := d.selectAttachments(ctx, c, pod)
	if err != nil {
		return err
	}
	for _, a := range sel {
		if err := d.delete(ctx, c, a); err != nil {
			return err
		}
	}
	if d.wait {
		for i, a := range sel {
			last, gone, err := c.waitFor(ctx, a.Namespace, a.Name, d.timeout, func(*hotgpuv1.GPUAttachment) bool { return false })
			if !gone {
				if last != nil {
					a = last
				}
				return fmt.Errorf("gpuattachment/%s not detached: %v (%s: %s)", a.Name, err, phase(a), a.Status.Message)
			}
			sel[i] = a
		}
	}
	return d.print(sel, func(w io.Writer) {
		for _, a := range sel {
			fmt.Fprintf(w, "gpuattachment/%s deleted (GPUs %v)\n", a.Name, indexes(a))
		}
	})
}

// selectAttachments returns the pod's attachments to delete: every one
// with --all, else those holding the --gpu GPUs, which must cover them
// whole (an attachment is detached entirely or not at all).
func (d *detachOptions) selectAttachments(ctx context.Context, c *clients, pod string) ([]*hotgpuv1.GPUAttachment, error) {
	list, err := c.attachments(c.namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, g := range d.gpus {
		want[g] = true
	}
	var out []*hotgpuv1.GPUAttachment
	for i := range list.Items {
		a, err := decode(&list.Items[i])
		if err != nil {
			return nil, err
		}
		if a.Spec.PodName != pod || (d.container != "" && a.Spec.Container != d.container) {
			continue
		}
		if d.all {
			out = append(out, a)
			continue
		}
		n := 0
		for _, g := range a.Status.GPUs {
			if want[strconv.Itoa(g.Index)] || want[g.UUID] {
				n++
				delete(want, strconv.Itoa(g.Index))
				delete(want, g.UUID)
			}
		}
		if n > 0 && n < len(a.Status.GPUs) {
			return nil, fmt.Errorf("gpuattachment/%s holds GPUs %v: detach all of them together", a.Name, indexes(a))
		}
		if n > 0 {
			out = append(out, a)
		}
	}
	if len(want) > 0 {
		return nil, fmt.Errorf("no attachment of pod %s holds GPU(s) %v", pod, keys(want))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("pod %s has no GPU attachments", pod)
	}
	return out, nil
}

// delete deletes an attachment, first switching it to Force with --force.
func (d *detachOptions) delete(ctx context.Context, c *clients, a *hotgpuv1.GPUAttachment) error {
	if d.force && a.Spec.DetachPolicy != hotgpuv1.Force {
		patch := []byte(`{"spec":{"detachPolicy":"Force"}}`)
		if _, err := c.attachments(a.Namespace).Patch(ctx, a.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			return err
		}
	}
	return c.attachments(a.Namespace).Delete(ctx, a.Name, metav1.DeleteOptions{})
}

func indexes(a *hotgpuv1.GPUAttachment) []int {
	out := []int{}
	for _, g := range a.Status.GPUs {
		out = append(out, g.Index)
	}
	return out
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
