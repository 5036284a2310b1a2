// Command kubectl-hotgpu is the kubectl plugin for GPUs attached live to
// running pods (GPUAttachment, api/hotgpu/v1alpha1): `kubectl hotgpu attach`,
// `detach` and `ls`. It only creates, deletes and reads GPUAttachments with
// the user's own credentials (the standard kubectl flags, through
// k8s.io/cli-runtime); the node's hotgpud does the attaching, so the API
// server's RBAC and admission decide who may.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func main() {
	cmd := newRoot(genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	if err := cmd.Execute(); err != nil {
		var fe *failedError
		if !errors.As(err, &fe) {
			fmt.Fprintln(os.Stderr, "error:", err)
		}
		os.Exit(1)
	}
}

// failedError is an attachment that ended Failed: its message was printed.
type failedError struct{ msg string }

func (e *failedError) Error() string { return e.msg }

// options are the flags every subcommand shares.
type options struct {
	flags   *genericclioptions.ConfigFlags
	output  string
	streams genericiooptions.IOStreams
}

func newRoot(streams genericiooptions.IOStreams) *cobra.Command {
	o := &options{flags: genericclioptions.NewConfigFlags(true), streams: streams}
	root := &cobra.Command{
		Use:   "kubectl-hotgpu",
		Short: "Attach GPUs to running pods, detach them, list them",
		Long: `kubectl hotgpu attaches NVIDIA GPUs to a running pod's container live, through
GPUAttachment objects (hotgpu.dev/v1alpha1) that the node's hotgpud carries out.
You need create/delete on gpuattachments in the pod's namespace (the edit role).

A process sees the GPUs that existed when it initialised CUDA: start the worker
that should use an attached GPU after the attach.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	o.flags.AddFlags(root.PersistentFlags())
	root.PersistentFlags().StringVarP(&o.output, "output", "o", "", "output format: json or yaml (default: a short text)")
	root.AddCommand(newAttach(o), newDetach(o), newLs(o))
	return root
}

func (o *options) checkOutput() error {
	switch o.output {
	case "", "json", "yaml":
		return nil
	}
	return fmt.Errorf("--output must be json or yaml, got %q", o.output)
}
