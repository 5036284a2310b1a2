// Package registry keeps hotgpud's view of the containers the runtime has
// told it about through NRI: their pod, name, process, cgroup and base device
// rules. Live attach uses it to turn "--pod ns/name" into a container and to
// rebuild a cgroup v2 device program from the container's own rules. It holds
// no GPU assignments (the ledger does) and imports no runtime API.
package registry

import (
	"fmt"
	"sort"
	"strings"
	"sync"
)

// DeviceRule is one entry of the container's device cgroup allow/deny list,
// as the runtime spec gives it.
type DeviceRule struct {
	Allow  bool   `json:"allow"`
	Type   string `json:"type"`
	Major  *int64 `json:"major,omitempty"`
	Minor  *int64 `json:"minor,omitempty"`
	Access string `json:"access"`
}

// Container is what NRI reported about one container.
type Container struct {
	ID           string
	Name         string
	PodNamespace string
	PodName      string
	PodUID       string
	PID          int
	// CgroupsPath is the runtime's cgroups path ("/k8s.io/<id>" with
	// cgroupfs, "slice:prefix:name" with systemd).
	CgroupsPath string
	// Rules are the container's own device rules, the base of a rebuilt
	// cgroup v2 device program.
	Rules []DeviceRule
	// Annotations are the pod's annotations.
	Annotations map[string]string
}

// Registry is safe for concurrent use.
type Registry struct {
	mu   sync.RWMutex
	byID map[string]*Container
}

// New returns an empty registry.
func New() *Registry { return &Registry{byID: map[string]*Container{}} }

// Put adds or replaces a container; fields left zero keep their old value
// (a PostStart event carries the PID the Create event lacked).
func (r *Registry) Put(c Container) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.byID[c.ID]; ok {
		if c.PID == 0 {
			c.PID = old.PID
		}
		if c.Rules == nil {
			c.Rules = old.Rules
		}
		if c.CgroupsPath == "" {
			c.CgroupsPath = old.CgroupsPath
		}
	}
	r.byID[c.ID] = &c
}

// Remove forgets a container.
func (r *Registry) Remove(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.byID, id)
}

// Replace sets the whole set of containers (NRI Synchronize).
func (r *Registry) Replace(cs []Container) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.byID = make(map[string]*Container, len(cs))
	for i := range cs {
		c := cs[i]
		r.byID[c.ID] = &c
	}
}

// Get returns a copy of one container.
func (r *Registry) Get(id string) (Container, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	c, ok := r.byID[id]
	if !ok {
		return Container{}, false
	}
	return *c, true
}

// List returns a copy of every known container.
func (r *Registry) List() []Container {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Container, 0, len(r.byID))
	for _, c := range r.byID {
		out = append(out, *c)
	}
	return out
}

// Has reports whether the container is known.
func (r *Registry) Has(id string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.byID[id]
	return ok
}

// Len is the number of known containers.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.byID)
}

// FindPod returns the container of pod namespace/name; name selects among
// several containers and may be empty when the pod has exactly one.
func (r *Registry) FindPod(namespace, pod, name string) (Container, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var found []*Container
	for _, c := range r.byID {
		if c.PodNamespace == namespace && c.PodName == pod && (name == "" || c.Name == name) {
			found = append(found, c)
		}
	}
	switch len(found) {
	case 1:
		return *found[0], nil
	case 0:
		if name != "" {
			return Container{}, fmt.Errorf("pod %s/%s has no container %q known to hotgpud", namespace, pod, name)
		}
		return Container{}, fmt.Errorf("pod %s/%s has no container known to hotgpud (is it running on this node?)", namespace, pod)
	default:
		names := make([]string, len(found))
		for i, c := range found {
			names[i] = c.Name
		}
		sort.Strings(names)
		return Container{}, fmt.Errorf("pod %s/%s has %d containers (%s): choose one with --container-name",
			namespace, pod, len(found), strings.Join(names, ", "))
	}
}

// FindID resolves a full container id or a unique prefix of at least 6
// characters.
func (r *Registry) FindID(id string) (Container, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if c, ok := r.byID[id]; ok {
		return *c, nil
	}
	if len(id) < 6 {
		return Container{}, fmt.Errorf("container %q not found (give at least 6 characters of its id)", id)
	}
	var match *Container
	for cid, c := range r.byID {
		if strings.HasPrefix(cid, id) {
			if match != nil {
				return Container{}, fmt.Errorf("container id prefix %q is ambiguous", id)
			}
			match = c
		}
	}
	if match == nil {
		return Container{}, fmt.Errorf("container %q not found among the %d containers hotgpud knows", id, len(r.byID))
	}
	return *match, nil
}
