package sim

import (
	"fmt"
	"reflect"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// xidFellOffBus is the Xid the driver reports when a GPU falls off the bus.
const xidFellOffBus = 79

// LoseGPU makes a GPU fall off the bus the way it does on a real node: NVML
// still counts it and hands out its handle, and the other GPUs keep their
// indices, but every call on it answers GPU_IS_LOST except its PCI info,
// which the driver keeps. A registered health watcher gets Xid 79.
// RestoreGPU brings it back, as a GPU reset does.
func (s *Sim) LoseGPU(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	slot, err := s.resolve(id)
	if err != nil {
		return err
	}
	if s.removed[slot] || s.lost[slot] != nil {
		return fmt.Errorf("failed to lose simulated GPU %s: it is already removed or lost", id)
	}
	s.lost[slot] = lostDevice(s.slots[slot])
	s.renumber()
	if s.events.registered {
		select { // like InjectXid, but the Provider's mu is held here
		case s.events.queue <- nvml.EventData{Device: s.slots[slot], EventType: nvml.EventTypeXidCriticalError, EventData: xidFellOffBus}:
		default:
		}
	}
	return nil
}

// lostDevice is the handle of a GPU that fell off the bus: every method
// answers ERROR_GPU_IS_LOST (and zero values) except GetPciInfo. It is
// built by reflection so that no method NVML offers is left unanswered.
func lostDevice(d *server.Device) nvml.Device {
	m := &mock.Device{}
	v := reflect.ValueOf(m).Elem()
	lost := reflect.ValueOf(nvml.ERROR_GPU_IS_LOST)
	for i := range v.NumField() {
		f := v.Field(i)
		if f.Kind() != reflect.Func || !f.CanSet() {
			continue
		}
		ft := f.Type()
		f.Set(reflect.MakeFunc(ft, func([]reflect.Value) []reflect.Value {
			out := make([]reflect.Value, ft.NumOut())
			for o := range out {
				out[o] = reflect.Zero(ft.Out(o))
				if ft.Out(o) == lost.Type() {
					out[o] = lost
				}
			}
			return out
		}))
	}
	info, _ := d.GetPciInfo()
	m.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) { return info, nvml.SUCCESS }
	return m
}
