package sim

import (
	"fmt"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// simEvents is the simulated node's event queue: go-nvml's mock server has
// no event sets, so the Sim gives it one that InjectEvent feeds.
type simEvents struct {
	queue      chan nvml.EventData
	registered bool // a HealthWatcher registered (guarded by the Sim's mu)
}

func (s *Sim) wireEvents() {
	s.events = &simEvents{queue: make(chan nvml.EventData, 64)}
	s.server.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) {
		return &mock.EventSet{
			WaitFunc: func(timeoutMs uint32) (nvml.EventData, nvml.Return) {
				t := time.NewTimer(time.Duration(timeoutMs) * time.Millisecond)
				defer t.Stop()
				select {
				case e := <-s.events.queue:
					return e, nvml.SUCCESS
				case <-t.C:
					return nvml.EventData{}, nvml.ERROR_TIMEOUT
				}
			},
			FreeFunc: func() nvml.Return { return nvml.SUCCESS },
		}, nvml.SUCCESS
	}
	for _, d := range s.slots {
		d.GetSupportedEventTypesFunc = func() (uint64, nvml.Return) {
			return nvml.EventTypeXidCriticalError | nvml.EventTypeDoubleBitEccError | nvml.EventTypeSingleBitEccError | nvml.EventMigConfigChange, nvml.SUCCESS
		}
		d.RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return {
			s.events.registered = true // called under the Provider's mu
			return nvml.SUCCESS
		}
	}
}

// InjectXid makes the simulated GPU id (slot or UUID) report Xid xid, as
// the driver does on a GPU fault.
func (s *Sim) InjectXid(id string, xid uint64) error {
	return s.inject(id, nvml.EventTypeXidCriticalError, xid)
}

// InjectECC makes the simulated GPU report a double-bit ECC error.
func (s *Sim) InjectECC(id string) error {
	return s.inject(id, nvml.EventTypeDoubleBitEccError, 0)
}

func (s *Sim) inject(id string, kind, data uint64) error {
	s.mu.Lock()
	slot, err := s.resolve(id)
	registered := s.events.registered
	var d *server.Device
	if err == nil {
		d = s.slots[slot]
	}
	s.mu.Unlock()
	switch {
	case err != nil:
		return err
	case !registered:
		return fmt.Errorf("failed to inject event on simulated GPU %s: %w", id, ErrNoEvents)
	}
	select {
	case s.events.queue <- nvml.EventData{Device: d, EventType: kind, EventData: data}:
		return nil
	default:
		return fmt.Errorf("failed to inject event on simulated GPU %s: event queue is full", id)
	}
}

// DropEvents makes a simulated GPU one whose error events NVML cannot
// deliver (GetSupportedEventTypes answers NOT_SUPPORTED), as on GPUs and
// vGPUs without Xid reporting. Health watchers created afterwards list it
// as Unwatched.
func (s *Sim) DropEvents(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	slot, err := s.resolve(id)
	if err != nil {
		return err
	}
	s.slots[slot].GetSupportedEventTypesFunc = func() (uint64, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
	return nil
}

// migChanged tells a registered watcher that the slot's MIG layout changed,
// as the driver does after nvidia-smi mig -cgi/-dgi. Call with mu held.
func (s *Sim) migChanged(slot int) {
	if !s.events.registered {
		return
	}
	select {
	case s.events.queue <- nvml.EventData{Device: s.slots[slot], EventType: nvml.EventMigConfigChange}:
	default:
	}
}
