package k8s

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	hotgpuv1 "github.com/hotgpu/hotgpu/api/hotgpu/v1alpha1"
	"github.com/hotgpu/hotgpu/internal/policy"
)

// Config says how the agent reaches the API server and which node it is.
type Config struct {
	// Kubeconfig is a kubeconfig file; empty means the in-cluster config.
	Kubeconfig string
	// NodeName is this node; empty means $NODE_NAME, then the hostname.
	NodeName string
}

// ErrNoCluster is returned by RESTConfig when there is no kubeconfig and
// hotgpud does not run in a pod: the agent is simply not started.
var ErrNoCluster = errors.New("no kubeconfig and not running in a pod")

// RESTConfig returns the API server's config: the kubeconfig if given, else
// the in-cluster config, else ErrNoCluster.
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("failed to load kubeconfig %s: %w", kubeconfig, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if errors.Is(err, rest.ErrNotInCluster) {
		return nil, ErrNoCluster
	}
	return cfg, err
}

// NodeName resolves the node's name: name, else $NODE_NAME, else the hostname.
func NodeName(name string) (string, error) {
	if name != "" {
		return name, nil
	}
	if n := os.Getenv("NODE_NAME"); n != "" {
		return n, nil
	}
	return os.Hostname()
}

// Agent carries out the GPUAttachments of its node's pods.
type Agent struct {
	node     string
	client   kubernetes.Interface
	dyn      dynamic.Interface
	attacher Attacher
	grants   Grants
	inv      Inventory
	log      *logrus.Entry
	recorder record.EventRecorder
	// holderImage, when set, makes attachments go through holder pods
	// asking resource (UseHolders).
	holderImage string
	resource    corev1.ResourceName

	pods     corelisters.PodLister
	podCache cache.Indexer
	podsSync cache.InformerSynced
	// owned are attachments labelled with this node; unowned carry no node
	// label yet.
	owned, unowned cache.SharedIndexInformer
	queue          workqueue.TypedRateLimitingInterface[string]
	informers      []interface{ Start(<-chan struct{}) }

	// policy is annotations.namespaces, for annotations changed on
	// running pods; refused remembers the refusals already told; made and
	// gone are the attachments the agent created and deleted that the
	// watch has not shown yet (gone: of which pod).
	policy  policy.Policy
	mu      sync.Mutex
	refused map[string]string
	made    map[string]*hotgpuv1.GPUAttachment
	gone    map[string]string
	// uncharged are the pods' containers ("podUID/container") whose
	// charge pods were deleted (charge.go).
	uncharged map[string]bool
}

// byPod indexes attachments by "namespace/podName".
const byPod = "pod"

// The agent's client-side rate limit, unless the config sets one. client-go's
// default (5 requests/s, burst 10) is below what one attach and detach cost
// (claim, holder pod, two status writes, events, finalizer: ~12 requests):
// at one attachment a second its requests queued behind each other for
// 200 ms steps, up to 0.6 s per attach. kubelet's own default is 50/100; an
// agent only writes for its node's attachments, so the cluster-wide load
// follows the attachments, not the node count.
const (
	agentQPS   = 50
	agentBurst = 100
)

// New builds an agent; nothing runs until Run.
func New(cfg *rest.Config, node string, a Attacher, g Grants, inv Inventory, log *logrus.Entry) (*Agent, error) {
	if cfg.QPS == 0 && cfg.RateLimiter == nil {
		cfg = rest.CopyConfig(cfg)
		cfg.QPS, cfg.Burst = agentQPS, agentBurst
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("failed to create Kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("failed to create Kubernetes client: %w", err)
	}
	return newAgent(client, dyn, node, a, g, inv, log)
}

func newAgent(client kubernetes.Interface, dyn dynamic.Interface, node string, a Attacher, g Grants, inv Inventory, log *logrus.Entry) (*Agent, error) {
	ag := &Agent{node: node, client: client, dyn: dyn, attacher: a, grants: g, inv: inv, resource: gpuResource,
		refused: map[string]string{}, made: map[string]*hotgpuv1.GPUAttachment{}, gone: map[string]string{},
		log: log.WithFields(logrus.Fields{"component": "k8s-agent", "node": node}),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](200*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "gpuattachments"}),
	}
	ag.recorder = newRecorder(client, node)
	ag.watchPods()
	if err := ag.watchAttachments(); err != nil {
		return nil, err
	}
	return ag, nil
}

func newRecorder(client kubernetes.Interface, node string) record.EventRecorder {
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	s := runtime.NewScheme()
	_ = scheme.AddToScheme(s)
	_ = hotgpuv1.AddToScheme(s)
	return b.NewRecorder(s, corev1.EventSource{Component: "hotgpud", Host: node})
}

func (ag *Agent) watchPods() {
	f := informers.NewSharedInformerFactoryWithOptions(ag.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", ag.node).String()
		}))
	inf := f.Core().V1().Pods()
	ag.pods, ag.podCache, ag.podsSync = inf.Lister(), inf.Informer().GetIndexer(), inf.Informer().HasSynced
	_, _ = inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    ag.onPod,
		UpdateFunc: func(_, obj any) { ag.onPod(obj) },
		DeleteFunc: func(obj any) { ag.forget(obj); ag.onPod(obj) },
	})
	ag.informers = append(ag.informers, f)
}

func (ag *Agent) watchAttachments() error {
	mine, err := labels.NewRequirement(hotgpuv1.NodeLabel, selection.Equals, []string{ag.node})
	if err != nil {
		return fmt.Errorf("node name %q cannot be a label value: %w", ag.node, err)
	}
	none, _ := labels.NewRequirement(hotgpuv1.NodeLabel, selection.DoesNotExist, nil)
	for _, sel := range []struct {
		req *labels.Requirement
		inf *cache.SharedIndexInformer
	}{{mine, &ag.owned}, {none, &ag.unowned}} {
		s := labels.NewSelector().Add(*sel.req).String()
		f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(ag.dyn, 0, metav1.NamespaceAll,
			func(o *metav1.ListOptions) { o.LabelSelector = s })
		inf := f.ForResource(hotgpuv1.Resource).Informer()
		if err := inf.AddIndexers(cache.Indexers{byPod: podIndex}); err != nil {
			return err
		}
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    ag.enqueue,
			UpdateFunc: func(_, obj any) { ag.enqueue(obj) },
			DeleteFunc: ag.enqueue,
		})
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    ag.enqueueOwner,
			UpdateFunc: func(_, obj any) { ag.enqueueOwner(obj) },
			DeleteFunc: ag.enqueueOwner,
		})
		*sel.inf = inf
		ag.informers = append(ag.informers, f)
	}
	return nil
}

// Run watches and reconciles until ctx ends.
func (ag *Agent) Run(ctx context.Context) error {
	defer ag.queue.ShutDown()
	for _, f := range ag.informers {
		f.Start(ctx.Done())
	}
	if !cache.WaitForCacheSync(ctx.Done(), ag.podsSync, ag.owned.HasSynced, ag.unowned.HasSynced) {
		return fmt.Errorf("failed to sync the node's pods and attachments: %w", ctx.Err())
	}
	ag.log.Info("watching this node's pods and GPUAttachments")
	if l, ok := ag.grants.(subscriber); ok {
		changed, stop := l.Subscribe()
		defer stop()
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-changed:
					ag.ledgerChanged()
				}
			}
		}()
	}
	go func() {
		<-ctx.Done()
		ag.queue.ShutDown()
	}()
	for ag.next(ctx) {
	}
	return nil
}

func (ag *Agent) next(ctx context.Context) bool {
	key, quit := ag.queue.Get()
	if quit {
		return false
	}
	defer ag.queue.Done(key)
	var after time.Duration
	var err error
	if strings.HasPrefix(key, podKeyPrefix) {
		err = ag.adjustPod(ctx, key)
	} else {
		after, err = ag.reconcile(ctx, key)
	}
	switch {
	case err != nil:
		ag.log.WithError(err).WithField("attachment", key).Warn("reconcile failed; retrying")
		ag.queue.AddRateLimited(key)
	case after > 0:
		ag.queue.Forget(key)
		ag.queue.AddAfter(key, after)
	default:
		ag.queue.Forget(key)
	}
	return true
}

func (ag *Agent) enqueue(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err == nil {
		ag.queue.Add(key)
	}
}

// onPod is the pod reconciler: a pod of this node that changed (started,
// restarted, ended, deleted) has its attachments looked at again.
func (ag *Agent) onPod(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	ag.enqueuePod(p)
	ag.onHolder(p)
	for _, inf := range []cache.SharedIndexInformer{ag.owned, ag.unowned} {
		objs, _ := inf.GetIndexer().ByIndex(byPod, p.Namespace+"/"+p.Name)
		for _, o := range objs {
			ag.enqueue(o)
		}
	}
}

func (ag *Agent) informersOf() []cache.SharedIndexInformer {
	return []cache.SharedIndexInformer{ag.owned, ag.unowned}
}

// enqueueOwner queues the pod of an attachment that carries its
// annotation: the pod's applied GPUs follow the attachment.
func (ag *Agent) enqueueOwner(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	a, err := fromUnstructured(obj)
	if err != nil || !fromAnnotation(a) {
		return
	}
	ag.queue.Add(podKeyPrefix + a.Namespace + "/" + a.Spec.PodName)
}
