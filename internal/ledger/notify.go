package ledger

// Subscribe returns a channel that receives a value after the ledger
// changes, and a function that ends the subscription. Notifications are
// coalesced (the channel holds at most one) and never block a writer, so a
// subscriber re-reads the state it needs (Grants, Lookup) when woken; it
// never learns what changed, only that something may have.
func (l *Ledger) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.subs == nil {
		l.subs = map[chan struct{}]struct{}{}
	}
	l.subs[ch] = struct{}{}
	return ch, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.subs, ch)
	}
}

// notify wakes every subscriber. Called with l.mu held.
func (l *Ledger) notify() {
	for ch := range l.subs {
		select {
		case ch <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}
