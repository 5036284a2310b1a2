package dra

import (
	"context"
	"errors"
	"time"

	"github.com/sirupsen/logrus"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metaapply "k8s.io/client-go/applyconfigurations/meta/v1"
	resourceapply "k8s.io/client-go/applyconfigurations/resource/v1"

	"github.com/hotgpu/hotgpu/internal/ledger"
)

// Condition of a claim's device that hotgpud writes when Prepare refuses it.
const (
	ConditionReady = "Ready"
	// ReasonGPUHeld: another allocator (the device plugin, an annotation,
	// live attach, the hook) holds the GPU; the scheduler allocated it from
	// a slice published a moment before the ledger changed.
	ReasonGPUHeld = "GPUHeldByAnotherAllocator"
	// ReasonPrepareFailed: any other refusal (an unknown device, the CDI
	// spec not written).
	ReasonPrepareFailed = "PrepareFailed"
	// ReasonPrepared (Ready=True) replaces a refusal once a retry prepared
	// the claim.
	ReasonPrepared = "Prepared"
)

// statusTimeout bounds the status write: Prepare answers kubelet anyway.
const statusTimeout = 5 * time.Second

// reportPrepare makes the claim say why Prepare refused it: each of its
// devices on this node gets the condition Ready=False with the error, in
// status.devices (server-side apply, field manager gpu.hotgpu.dev, so the
// entries are the driver's own). Kubelet only logs the error and makes a
// pod event. Once a retry prepares the claim, the condition turns
// Ready=True (Prepared); a claim not refused costs no API call.
func (d *Driver) reportPrepare(ctx context.Context, c *resourceapi.ResourceClaim, prepErr error) {
	if d.claims == nil || c.Status.Allocation == nil || (prepErr == nil && !d.refused(c)) {
		return
	}
	cond, reason, msg := metav1.ConditionTrue, ReasonPrepared, "prepared after an earlier refusal"
	if prepErr != nil {
		cond, reason, msg = metav1.ConditionFalse, ReasonPrepareFailed, prepErr.Error()
		if errors.Is(prepErr, ledger.ErrHeld) {
			reason = ReasonGPUHeld
		}
	}
	status := resourceapply.ResourceClaimStatus()
	for _, r := range c.Status.Allocation.Devices.Results {
		if r.Driver != DriverName || r.Pool != d.cfg.Node {
			continue
		}
		since := metav1.Now() // kept while the status stays the same (kubelet retries)
		if old := d.ready(c, r.Device); old != nil && old.Status == cond {
			since = old.LastTransitionTime
		}
		dev := resourceapply.AllocatedDeviceStatus().WithDriver(r.Driver).WithPool(r.Pool).WithDevice(r.Device).
			WithConditions(metaapply.Condition().WithType(ConditionReady).WithStatus(cond).
				WithReason(reason).WithMessage(msg).WithLastTransitionTime(since).WithObservedGeneration(c.Generation))
		if r.ShareID != nil {
			dev.WithShareID(string(*r.ShareID))
		}
		status.WithDevices(dev)
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	apply := resourceapply.ResourceClaim(c.Name, c.Namespace).WithStatus(status)
	if _, err := d.claims.ResourceClaims(c.Namespace).ApplyStatus(ctx, apply, metav1.ApplyOptions{FieldManager: DriverName, Force: true}); err != nil {
		d.log.WithError(err).WithField("claim", c.Namespace+"/"+c.Name).Warn("failed to write the ResourceClaim's device status")
		return
	}
	d.log.WithFields(logrus.Fields{"claim": c.Namespace + "/" + c.Name, "reason": reason}).Info("ResourceClaim device status written")
}

// ready is the Ready condition hotgpud wrote for a device of the claim.
func (d *Driver) ready(c *resourceapi.ResourceClaim, device string) *metav1.Condition {
	for _, s := range c.Status.Devices {
		if s.Driver == DriverName && s.Pool == d.cfg.Node && s.Device == device {
			return meta.FindStatusCondition(s.Conditions, ConditionReady)
		}
	}
	return nil
}

// refused reports whether the claim still says Prepare refused one of its
// devices on this node.
func (d *Driver) refused(c *resourceapi.ResourceClaim) bool {
	for _, s := range c.Status.Devices {
		if s.Driver == DriverName && s.Pool == d.cfg.Node && !meta.IsStatusConditionTrue(s.Conditions, ConditionReady) {
			return true
		}
	}
	return false
}
