package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hotgpuv1 "github.com/hotgpu/hotgpu/api/hotgpu/v1alpha1"
)

type attachOptions struct {
	*options
	container string
	count     int32
	gpus      []string
	wait      bool
	timeout   time.Duration
}

func newAttach(o *options) *cobra.Command {
	a := &attachOptions{options: o}
	cmd := &cobra.Command{
		Use:   "attach POD [-c CONTAINER] (--count N | --gpu ID,...) [--wait] [--timeout D]",
		Short: "Attach GPUs to a running pod's container",
		Example: `  kubectl hotgpu attach notebook --count 1 --wait
  kubectl hotgpu attach trainer -c worker --gpu 2,3 -n team-a -o yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return a.run(cmd.Context(), args[0]) },
	}
	f := cmd.Flags()
	f.StringVarP(&a.container, "container", "c", "", "the pod's container (needed when it has several)")
	f.Int32Var(&a.count, "count", 0, "attach N GPUs of hotgpud's choosing (1..8)")
	f.StringSliceVar(&a.gpus, "gpu", nil, "attach these GPUs, by index or UUID")
	f.BoolVar(&a.wait, "wait", false, "wait until the GPUs are attached (exit non-zero if the attachment fails)")
	f.DurationVar(&a.timeout, "timeout", 60*time.Second, "how long --wait waits")
	return cmd
}

func (a *attachOptions) validate() error {
	if err := a.checkOutput(); err != nil {
		return err
	}
	switch {
	case (a.count != 0) == (len(a.gpus) != 0):
		return errors.New("give exactly one of --count N or --gpu ID,...")
	case a.count < 0 || a.count > 8:
		return fmt.Errorf("--count must be 1..8, got %d", a.count)
	}
	return nil
}

func (a *attachOptions) run(ctx context.Context, pod string) error {
	if err := a.validate(); err != nil {
		return err
	}
	c, err := a.clients()
	if err != nil {
		return err
	}
	p, err := c.kube.CoreV1().Pods(c.namespace).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if p.Spec.NodeName == "" {
		return fmt.Errorf("pod %s is not scheduled on a node yet", pod)
	}
	u, err := encode(a.object(p))
	if err != nil {
		return err
	}
	created, err := c.attachments(c.namespace).Create(ctx, u, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	att, err := decode(created)
	if err != nil {
		return err
	}
	if a.wait {
		last, gone, err := c.waitFor(ctx, c.namespace, att.Name, a.timeout, func(x *hotgpuv1.GPUAttachment) bool {
			return x.Status.Phase == hotgpuv1.Attached || x.Status.Phase == hotgpuv1.Failed
		})
		if last != nil {
			att = last
		}
		switch {
		case gone:
			return fmt.Errorf("gpuattachment/%s was deleted while waiting", att.Name)
		case err != nil:
			return fmt.Errorf("gpuattachment/%s is %s: %w (%s)", att.Name, phase(att), err, att.Status.Message)
		}
	}
	if err := a.print(att, func(w io.Writer) { describe(w, att) }); err != nil {
		return err
	}
	if att.Status.Phase == hotgpuv1.Failed {
		fmt.Fprintf(a.streams.ErrOut, "error: gpuattachment/%s failed: %s\n", att.Name, att.Status.Message)
		return &failedError{att.Status.Message}
	}
	return nil
}

// object is the attachment to create: named after the pod, labelled with
// its node (each node's agent watches only its own node's label) and owned
// by the pod (deleting the pod deletes it).
func (a *attachOptions) object(p *corev1.Pod) *hotgpuv1.GPUAttachment {
	att := &hotgpuv1.GPUAttachment{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName:    p.Name + "-",
			Namespace:       p.Namespace,
			Labels:          map[string]string{hotgpuv1.NodeLabel: p.Spec.NodeName},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: p.Name, UID: p.UID}},
		},
		Spec: hotgpuv1.GPUAttachmentSpec{PodName: p.Name, Container: a.container, GPUs: a.gpus},
	}
	if a.count > 0 {
		att.Spec.Count = &a.count
	}
	return att
}

func phase(a *hotgpuv1.GPUAttachment) string {
	if a.Status.Phase == "" {
		return "not picked up by a node agent yet"
	}
	return string(a.Status.Phase)
}

func describe(w io.Writer, a *hotgpuv1.GPUAttachment) {
	var gpus []string
	for _, g := range a.Status.GPUs {
		gpus = append(gpus, fmt.Sprintf("%d (%s)", g.Index, g.Device))
	}
	fmt.Fprintf(w, "gpuattachment/%s %s", a.Name, phase(a))
	if len(gpus) > 0 {
		fmt.Fprintf(w, ": GPUs %s", strings.Join(gpus, ", "))
	} else if a.Status.Message != "" {
		fmt.Fprintf(w, ": %s", a.Status.Message)
	}
	fmt.Fprintln(w)
}
