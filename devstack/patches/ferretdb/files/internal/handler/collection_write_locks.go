package handler

import "sync"

// collectionWriteLocks holds one mutex per "db.collection"; added by kafka-ecommerce's build
// so that read-modify-write commands on one collection do not interleave.
var collectionWriteLocks sync.Map

// lockCollectionWrites locks the collection's mutex and returns its unlock function.
func lockCollectionWrites(db, collection string) func() {
	m, _ := collectionWriteLocks.LoadOrStore(db+"."+collection, new(sync.Mutex))
	mu := m.(*sync.Mutex)
	mu.Lock()

	return mu.Unlock
}
