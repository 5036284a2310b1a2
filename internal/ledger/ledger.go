// Package ledger records which container holds which GPU, and why. It is the
// single source of truth shared by the NRI plugin, the device plugin, live
// attach and the hook: every change is persisted before the caller acts on
// it (temp file, fsync, rename; see WriteFileAtomic; a live attach's or
// detach's write-ahead record, which only a crash of hotgpud must find, is
// kept apart without the fsync: see IntentStore), and a GPU can never be
// held by two holders.
//
// The ledger knows GPUs only by UUID and containers only by id; it does not
// touch cgroups or device nodes.
package ledger

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Reason says why a GPU is held.
type Reason string

// Reasons a GPU can be held for.
const (
	Kubelet    Reason = "kubelet"    // allocated by kubelet through the device plugin
	Annotation Reason = "annotation" // asked for by a policy-checked pod annotation
	Attach     Reason = "attach"     // attached live through the API
	Hook       Reason = "hook"       // granted by hotgpu-hook for a runtime without NRI
	// DRA holds a GPU for a ResourceClaim prepared by the DRA kubelet
	// plugin (package dra), from Prepare until Unprepare; the holder is the
	// claim (Holder.ClaimUID), never a container.
	DRA Reason = "dra"
	// Quarantine holds a GPU that was detached while a process still had it
	// open or mapped: the device cgroup checks only open(2), so that process
	// keeps using it. Nobody gets the GPU until Lift, once no process holds
	// it. The grant's Holder is empty; Note says where it came from.
	Quarantine Reason = "quarantine"
)

// State tells whether a grant is complete.
type State string

// A live attach is Pending from the reservation until the cgroup rule and
// the node exist; a restart finds Pending grants and rolls them back.
const (
	Pending State = "pending"
	Active  State = "active"
)

// Holder identifies a container. ContainerID is empty only for a kubelet
// allocation that no container has claimed yet.
type Holder struct {
	ContainerID  string `json:"containerID,omitempty"`
	Container    string `json:"container,omitempty"`
	PodNamespace string `json:"podNamespace,omitempty"`
	PodName      string `json:"podName,omitempty"`
	PodUID       string `json:"podUID,omitempty"`
	// PID is recorded for containers targeted by process (ctr, nerdctl,
	// Docker), which hotgpud cannot see through NRI.
	PID int `json:"pid,omitempty"`
	// Cgroup is the container's cgroup path as the runtime reported it (or,
	// for a holder targeted by pid, as /proc/<pid>/cgroup shows it).
	Cgroup string `json:"cgroup,omitempty"`
	// StartTime is when process PID started (clock ticks after boot), so
	// that a reused pid is not taken for the holder.
	StartTime uint64 `json:"startTime,omitempty"`
	// Token is the secret of a kubelet allocation (policy.AllocationAnnotation):
	// only a holder presenting it may claim the allocation. Never logged or
	// shown.
	Token string `json:"token,omitempty"`
	// Tokens are the other secrets issued for the same GPU that are still
	// valid, space-separated (a string keeps Grant comparable): kubelet gives
	// an init container's devices to the pod's app containers and calls
	// Allocate again, and each container presents the token of its own
	// Allocate. Never logged or shown.
	Tokens string `json:"tokens,omitempty"`
	// Realises is, for a live attach that carries out a GPUAttachment with
	// a holder pod, that pod's UID: the grant realises the kubelet
	// allocation of the holder in this container, so the GPU is counted
	// once and neither is refused as held by the other.
	Realises string `json:"realises,omitempty"`
	// ClaimUID and Claim ("namespace/name") name the ResourceClaim of a
	// DRA grant.
	ClaimUID string `json:"claimUID,omitempty"`
	Claim    string `json:"claim,omitempty"`
}

// maxTokens bounds the tokens one grant keeps (the newest): one per
// container of a pod that shares the GPU.
const maxTokens = 32

// Accepts reports whether token may claim this kubelet allocation: it is
// one of the tokens issued for it, or the allocation has none.
func (h Holder) Accepts(token string) bool {
	if h.Token == "" && h.Tokens == "" {
		return true
	}
	return token != "" && (token == h.Token || slices.Contains(strings.Fields(h.Tokens), token))
}

// withTokens returns h carrying, besides its own, every token of old, so
// that a claim or a new Allocate for the same GPU invalidates none of them.
func withTokens(h, old Holder) Holder {
	seen := map[string]bool{h.Token: true}
	var out []string
	for _, t := range slices.Concat(strings.Fields(h.Tokens), []string{old.Token}, strings.Fields(old.Tokens)) {
		if !seen[t] && t != "" && len(out) < maxTokens {
			seen[t] = true
			out = append(out, t)
		}
	}
	h.Tokens = strings.Join(out, " ")
	return h
}

// External reports whether the holder is a container outside Kubernetes,
// known by its process (live attach by pid, the OCI hook): the runtime's NRI
// view does not list it, so only a process check may release it.
func (h Holder) External() bool { return h.PodUID == "" && h.PID != 0 }

func (h Holder) String() string {
	switch {
	case h.PodName != "" && h.Container != "":
		return fmt.Sprintf("%s/%s/%s", h.PodNamespace, h.PodName, h.Container)
	case h.ContainerID != "":
		return "container " + ShortID(h.ContainerID)
	case h.PodUID != "":
		return "pod " + h.PodUID
	case h.ClaimUID != "":
		return "ResourceClaim " + h.Claim
	default:
		return "kubelet allocation"
	}
}

// Grant is one GPU held by one holder.
type Grant struct {
	GPU    string    `json:"gpu"` // UUID
	Holder Holder    `json:"holder"`
	Reason Reason    `json:"reason"`
	State  State     `json:"state"`
	Since  time.Time `json:"since"`
	// Nodes are the device nodes hotgpu created in the container for this
	// grant (a GPU's own node; control nodes are recorded with every grant
	// of the container). Only these are ever removed again.
	Nodes CreatedNodes `json:"nodes,omitempty"`
	// Note says why a quarantined GPU is held (never secrets).
	Note string `json:"note,omitempty"`
}

// CreatedNode is a device node hotgpu made inside a container: its path
// there, its inode and the filesystem (st_dev) it lives on, and its device
// number. A file found at Path later is removed only if it is still this
// inode on this filesystem.
type CreatedNode struct {
	Path string `json:"path"`
	Ino  uint64 `json:"ino"`
	Dev  uint64 `json:"dev"`
	Rdev uint64 `json:"rdev"`
}

// CreatedNodes is a list of CreatedNode held as its canonical JSON text, so
// that a Grant stays a comparable value (grants are compared with ==). It
// is written and read as a JSON array. Make one with RecordNodes, read it
// with List.
type CreatedNodes string

// RecordNodes returns nodes as CreatedNodes ("" for none).
func RecordNodes(nodes []CreatedNode) CreatedNodes {
	if len(nodes) == 0 {
		return ""
	}
	b, _ := json.Marshal(nodes) // a slice of plain structs always encodes
	return CreatedNodes(b)
}

// List returns the nodes. The text is only ever made by RecordNodes or
// UnmarshalJSON, so it always decodes.
func (c CreatedNodes) List() []CreatedNode {
	if c == "" {
		return nil
	}
	var out []CreatedNode
	_ = json.Unmarshal([]byte(c), &out)
	return out
}

// MarshalJSON writes the list as a JSON array.
func (c CreatedNodes) MarshalJSON() ([]byte, error) {
	if c == "" {
		return []byte("null"), nil
	}
	return []byte(c), nil
}

// UnmarshalJSON reads a JSON array of CreatedNode.
func (c *CreatedNodes) UnmarshalJSON(b []byte) error {
	var nodes []CreatedNode
	if err := json.Unmarshal(b, &nodes); err != nil {
		return fmt.Errorf("invalid created nodes: %w", err)
	}
	*c = RecordNodes(nodes)
	return nil
}

// ErrHeld is returned when a GPU is held by another holder.
var ErrHeld = errors.New("GPU is held by another container")

// HeldError says which GPU is held and by whom.
type HeldError struct {
	GPU string
	By  Grant
	// Via is the device that is held when it is not GPU itself: the
	// parent of a MIG instance, or a MIG instance of a GPU.
	Via string
}

func (e *HeldError) Error() string {
	if e.Via != "" {
		return fmt.Sprintf("GPU %s shares its hardware with %s, which is held by %s (%s)", e.GPU, e.Via, e.By.Holder, e.By.Reason)
	}
	if e.By.Reason == Quarantine {
		return fmt.Sprintf("GPU %s is quarantined: %s", e.GPU, e.By.Note)
	}
	return fmt.Sprintf("GPU %s is held by %s (%s)", e.GPU, e.By.Holder, e.By.Reason)
}

// Is makes errors.Is(err, ErrHeld) true.
func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// Ledger is safe for concurrent use. Writers serialise on mu and persist
// before they publish; readers never wait for a writer's fsync: every
// change builds a new map and publishes it whole in view.
type Ledger struct {
	mu     sync.Mutex
	store  Store
	grants map[string]Grant // by GPU UUID; writers' copy, under mu
	view   atomic.Pointer[map[string]Grant]
	now    func() time.Time
	subs   map[chan struct{}]struct{}
	// overlaps lists the devices that share hardware with a device (see
	// SetOverlaps); nil when none do.
	overlaps atomic.Pointer[func(uuid string) []string]
}

// SetOverlaps gives the ledger the rule that a MIG instance and its parent
// GPU share hardware: overlapping(uuid) lists the devices that share it
// with uuid (gpu.Inventory.Overlapping of the current inventory). A device
// is then held while any device overlapping it is held by another holder,
// for Acquire and HeldBy alike.
func (l *Ledger) SetOverlaps(overlapping func(uuid string) []string) {
	l.overlaps.Store(&overlapping)
}

// overlapping is the grant that makes u busy through a device sharing its
// hardware, held by someone other than h (any holder when h is nil).
func (l *Ledger) overlapping(grants map[string]Grant, u string, h *Holder) (Grant, bool) {
	f := l.overlaps.Load()
	if f == nil {
		return Grant{}, false
	}
	for _, o := range (*f)(u) {
		if g, held := grants[o]; held && (h == nil || !sameHolder(g.Holder, *h)) {
			return g, true
		}
	}
	return Grant{}, false
}

// Store persists the ledger's grants. FileStore is the real one.
type Store interface {
	Load() ([]Grant, error)
	Save([]Grant) error
}

// IntentStore is a Store that keeps write-ahead records apart: SaveIntent
// persists grants whose change only says what is about to be done (grants
// entering Pending: a live attach before it touches the container, a detach
// before it revokes). Such a record must be found after a crash of hotgpud,
// so that the work is undone; it need not survive a power loss, which
// takes the containers it describes, their cgroup rules and /dev nodes with
// it. Load returns the intent when it is newer than the last Save. A Store
// without it saves intents with Save.
type IntentStore interface {
	SaveIntent([]Grant) error
}

// New loads the ledger from store. A store that cannot be read is an error:
// the caller decides how to recover (see ErrCorrupt), the ledger never
// silently starts empty.
func New(store Store) (*Ledger, error) {
	grants, err := store.Load()
	if err != nil {
		return nil, err
	}
	l := &Ledger{store: store, grants: make(map[string]Grant, len(grants)), now: time.Now}
	for _, g := range grants {
		if _, dup := l.grants[g.GPU]; dup {
			return nil, fmt.Errorf("%w: GPU %s recorded twice", ErrCorrupt, g.GPU)
		}
		l.grants[g.GPU] = g
	}
	view := l.grants // the field itself is the writers' and changes
	l.view.Store(&view)
	return l, nil
}

// Acquire records that holder holds every GPU in uuids, all or none. GPUs the
// same container already holds are kept (idempotent). A kubelet allocation
// that no container has claimed yet is claimed by a holder asking for the
// same GPU with reason Kubelet. Every token issued for a kubelet allocation
// stays valid while the allocation does (see Holder.Tokens).
func (l *Ledger) Acquire(h Holder, reason Reason, state State, uuids ...string) error {
	return l.acquire(h, reason, state, uuids, nil)
}

// Reserve acquires uuids for holder as Pending, as Acquire does, and records
// with them, in the same durable change, the device nodes hotgpu made for
// them (by GPU UUID; see SetNodes): a live attach makes its nodes first,
// then reserves, so that one write both claims the GPUs and says what to
// remove if the attach is rolled back or interrupted. Every GPU named in
// nodes must be among uuids.
func (l *Ledger) Reserve(h Holder, reason Reason, uuids []string, nodes map[string][]CreatedNode) error {
	for u := range nodes {
		if !slices.Contains(uuids, u) {
			return fmt.Errorf("nodes recorded for GPU %s, which is not reserved", u)
		}
	}
	return l.acquire(h, reason, Pending, uuids, nodes)
}

func (l *Ledger) acquire(h Holder, reason Reason, state State, uuids []string, nodes map[string][]CreatedNode) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := maps.Clone(l.grants)
	now := l.now().UTC()
	changed := false
	for _, u := range uuids {
		cur, held := next[u]
		nh := h
		switch {
		case !held:
		case sameHolder(cur.Holder, h):
			if cur.State == state && cur.Reason == reason && nodes[u] == nil {
				continue
			}
			if cur.Reason == Kubelet && reason == Kubelet {
				nh = withTokens(h, cur.Holder)
			}
		case claimable(cur, h, reason):
			// kubelet's allocation claimed by the container it was made
			// for; the pod's other containers sharing it keep their tokens
			nh = withTokens(h, cur.Holder)
		case reallocated(cur, h, reason):
			// kubelet allocates a GPU again for another container of the
			// same pod (an app container re-using its init container's
			// devices: both tokens stay valid), or because the pod it was
			// for is gone. Once a container of that pod has had it, its
			// containers have all stopped: the new pod takes it over.
			if cur.Holder.PodUID == "" {
				nh = withTokens(h, cur.Holder)
			}
		case moved(cur, h, reason):
			// the holder pod's kubelet allocation moves into the target
		default:
			return &HeldError{GPU: u, By: cur}
		}
		if by, busy := l.overlapping(next, u, &h); busy {
			return &HeldError{GPU: u, By: by, Via: by.GPU}
		}
		next[u] = Grant{GPU: u, Holder: nh, Reason: reason, State: state, Since: now, Nodes: RecordNodes(nodes[u])}
		changed = true
	}
	if !changed {
		return nil // nothing to persist, nobody to wake
	}
	return l.commitAs(next, state == Pending)
}

// SetState moves the container's grants of uuids to state.
func (l *Ledger) SetState(containerID string, state State, uuids ...string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := maps.Clone(l.grants)
	changed := false
	for _, u := range uuids {
		g, ok := next[u]
		if !ok || g.Holder.ContainerID != containerID {
			return fmt.Errorf("GPU %s is not held by container %s", u, ShortID(containerID))
		}
		changed = changed || g.State != state
		g.State = state
		next[u] = g
	}
	if !changed {
		return nil
	}
	return l.commitAs(next, state == Pending)
}

// SetNodes records with the container's grants named in nodes (by GPU
// UUID) the device nodes hotgpu created for them, replacing what they
// recorded, in one durable change.
func (l *Ledger) SetNodes(containerID string, nodes map[string][]CreatedNode) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := maps.Clone(l.grants)
	for u, made := range nodes {
		g, ok := next[u]
		if !ok || g.Holder.ContainerID != containerID {
			return fmt.Errorf("GPU %s is not held by container %s", u, ShortID(containerID))
		}
		g.Nodes = RecordNodes(made)
		next[u] = g
	}
	return l.commit(next)
}

// Release frees the listed GPUs held by containerID, or all of its GPUs when
// none are listed, and returns what it freed. Releasing a GPU the container
// does not hold is an error and frees nothing.
func (l *Ledger) Release(containerID string, uuids ...string) ([]Grant, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := maps.Clone(l.grants)
	var freed []Grant
	if len(uuids) == 0 {
		for u, g := range next {
			if g.Holder.ContainerID == containerID && containerID != "" {
				freed = append(freed, g)
				delete(next, u)
			}
		}
		giveBack(next, freed)
	}
	for _, u := range uuids {
		g, ok := next[u]
		if !ok || g.Holder.ContainerID != containerID {
			return nil, fmt.Errorf("GPU %s is not held by container %s", u, ShortID(containerID))
		}
		freed = append(freed, g)
		delete(next, u)
	}
	giveBack(next, freed)
	if len(freed) == 0 {
		return nil, nil
	}
	sortGrants(freed)
	return freed, l.commit(next)
}

// ContainerGone is called when a container stops or is removed. Its
// kubelet GPUs go back to its pod as unclaimed allocations (kubelet gives
// the same devices to the restarted container without asking again); every
// other GPU is released. It returns the released and the unbound grants.
func (l *Ledger) ContainerGone(containerID string) (released, unbound []Grant, err error) {
	if containerID == "" {
		return nil, nil, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	next := maps.Clone(l.grants)
	for u, g := range next {
		if g.Holder.ContainerID != containerID {
			continue
		}
		if g.Reason == Kubelet {
			g.Holder.ContainerID, g.Holder.Cgroup, g.Holder.PID = "", "", 0
			next[u] = g
			unbound = append(unbound, g)
			continue
		}
		released = append(released, g)
		delete(next, u)
	}
	giveBack(next, released)
	if len(released)+len(unbound) == 0 {
		return nil, nil, nil
	}
	sortGrants(released)
	sortGrants(unbound)
	return released, unbound, l.commit(next)
}

// giveBack returns to its holder pod, as that pod's unclaimed kubelet
// allocation, each released grant that realised one (Holder.Realises):
// kubelet still counts the GPU as the holder's until the holder goes, and a
// restarted target gets it moved again.
func giveBack(next map[string]Grant, released []Grant) {
	for _, g := range released {
		if g.Reason == Attach && g.Holder.Realises != "" {
			next[g.GPU] = Grant{GPU: g.GPU, Holder: Holder{PodUID: g.Holder.Realises}, Reason: Kubelet, State: Active, Since: g.Since}
		}
	}
}

// PodGone releases everything held for a pod, claimed or not.
func (l *Ledger) PodGone(podUID string) ([]Grant, error) {
	if podUID == "" {
		return nil, nil
	}
	return l.ReleaseWhere(func(g Grant) bool { return g.Holder.PodUID == podUID })
}

// Reconcile releases every grant whose container (or, for an unclaimed
// kubelet allocation, whose pod) no longer exists, and returns what it
// released. Kubelet allocations not yet tied to any pod are kept: kubelet
// allocates before the container exists. External holders are not judged
// here (see Holder.External).
func (l *Ledger) Reconcile(liveContainer, livePod func(string) bool) ([]Grant, error) {
	return l.ReleaseWhere(func(g Grant) bool {
		switch {
		case g.Holder.External():
			return false
		case g.Holder.ContainerID != "":
			return !liveContainer(g.Holder.ContainerID)
		case g.Holder.PodUID != "":
			return !livePod(g.Holder.PodUID)
		default:
			return false
		}
	})
}

// ReleaseWhere releases, in one durable change, every grant for which gone
// is true, and returns them. gone sees the grants under the ledger's lock,
// so a decision made on an older snapshot can be re-checked here.
func (l *Ledger) ReleaseWhere(gone func(Grant) bool) ([]Grant, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := maps.Clone(l.grants)
	var out []Grant
	for u, g := range next {
		if gone(g) {
			out = append(out, g)
			delete(next, u)
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	sortGrants(out)
	return out, l.commit(next)
}

// Grants returns every grant, ordered by GPU UUID.
func (l *Ledger) Grants() []Grant {
	out := slices.Collect(maps.Values(*l.view.Load()))
	sortGrants(out)
	return out
}

// Lookup returns the grant of one GPU.
func (l *Ledger) Lookup(uuid string) (Grant, bool) {
	g, ok := (*l.view.Load())[uuid]
	return g, ok
}

// HeldBy describes who holds a GPU and why ("" when it is free), for
// messages.
func (l *Ledger) HeldBy(uuid string) string {
	g, ok := l.Lookup(uuid)
	if !ok {
		if by, busy := l.overlapping(*l.view.Load(), uuid, nil); busy {
			return fmt.Sprintf("%s, which shares its hardware, held by %s (%s)", by.GPU, by.Holder, by.Reason)
		}
		return ""
	}
	if g.Reason == Quarantine {
		return "quarantine: " + g.Note
	}
	return fmt.Sprintf("%s (%s)", g.Holder, g.Reason)
}

// Quarantine moves the container's grants of uuids to quarantine in one
// durable change, so no other holder can take a GPU between its release
// and its quarantine. note says why, for messages and `hotgpu ls`.
func (l *Ledger) Quarantine(containerID, note string, uuids ...string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := maps.Clone(l.grants)
	now := l.now().UTC()
	for _, u := range uuids {
		if g, ok := next[u]; !ok || g.Holder.ContainerID != containerID || containerID == "" {
			return fmt.Errorf("GPU %s is not held by container %s", u, ShortID(containerID))
		}
		next[u] = Grant{GPU: u, Reason: Quarantine, State: Active, Since: now, Note: note}
	}
	if len(uuids) == 0 {
		return nil
	}
	return l.commit(next)
}

// Lift ends the quarantine of a GPU and reports whether it was quarantined;
// a GPU held for any other reason stays held.
func (l *Ledger) Lift(uuid string) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if g, ok := l.grants[uuid]; !ok || g.Reason != Quarantine {
		return false, nil
	}
	next := maps.Clone(l.grants)
	delete(next, uuid)
	return true, l.commit(next)
}

// Container returns the grants held by one container.
func (l *Ledger) Container(containerID string) []Grant {
	var out []Grant
	for _, g := range *l.view.Load() {
		if g.Holder.ContainerID == containerID {
			out = append(out, g)
		}
	}
	sortGrants(out)
	return out
}

// commit persists next and only then makes it the ledger's state, so a
// failed write changes nothing.
func (l *Ledger) commit(next map[string]Grant) error {
	return l.commitAs(next, false)
}

// commitAs is commit; intent says that the change only records work about
// to be done (see IntentStore).
func (l *Ledger) commitAs(next map[string]Grant, intent bool) error {
	list := slices.Collect(maps.Values(next))
	sortGrants(list)
	save := l.store.Save
	if is, ok := l.store.(IntentStore); ok && intent {
		save = is.SaveIntent
	}
	if err := save(list); err != nil {
		return fmt.Errorf("failed to persist ledger: %w", err)
	}
	l.grants = next
	l.view.Store(&next)
	l.notify()
	return nil
}

// claimable reports whether h may claim cur, an unclaimed kubelet
// allocation: only for reason Kubelet, and only within the pod it was
// bound to once a container of that pod has claimed it.
func claimable(cur Grant, h Holder, reason Reason) bool {
	return cur.Reason == Kubelet && reason == Kubelet && cur.Holder.ContainerID == "" &&
		h.ContainerID != "" && (cur.Holder.PodUID == "" || cur.Holder.PodUID == h.PodUID) &&
		cur.Holder.Accepts(h.Token)
}

// reallocated reports whether h, a new unclaimed kubelet allocation, may
// replace cur, an allocation no container claimed.
func reallocated(cur Grant, h Holder, reason Reason) bool {
	return cur.Reason == Kubelet && reason == Kubelet && cur.Holder.ContainerID == "" &&
		h.ContainerID == "" && h.PodUID == ""
}

// moved reports whether h, a live attach realising the kubelet allocation
// of pod h.Realises, may take cur, that pod's kubelet grant.
func moved(cur Grant, h Holder, reason Reason) bool {
	return reason == Attach && h.Realises != "" && cur.Reason == Kubelet && cur.Holder.PodUID == h.Realises
}

func sameHolder(a, b Holder) bool {
	if a.ContainerID != "" || b.ContainerID != "" {
		return a.ContainerID == b.ContainerID
	}
	if a.ClaimUID != "" || b.ClaimUID != "" {
		return a.ClaimUID == b.ClaimUID
	}
	return a.PodUID == b.PodUID && a.PodUID != ""
}

func sortGrants(g []Grant) {
	sort.Slice(g, func(i, j int) bool { return g[i].GPU < g[j].GPU })
}

// ShortID shortens a container id for messages, as the runtimes print it.
func ShortID(id string) string {
	if len(id) > 12 && !strings.Contains(id, "/") {
		return id[:12]
	}
	return id
}
