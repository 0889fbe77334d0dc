package fsm

import "sort"

// pageCopies are the pages of a paged table (workflow lists, the
// archive) that a transaction copied or made, by key, with their keys in
// order: finding the page that holds an id takes a binary search, not a
// walk over every copy, which a restore (one transaction that makes every
// page) would pay for each of its instances.
type pageCopies[P any] struct {
	byKey map[string]P
	keys  []string // in order
}

func (c *pageCopies[P]) get(key string) (P, bool) {
	p, ok := c.byKey[key]
	return p, ok
}

// put adds a page under its key, or replaces the one there.
func (c *pageCopies[P]) put(key string, p P) {
	if c.byKey == nil {
		c.byKey = map[string]P{}
	}
	if _, ok := c.byKey[key]; !ok {
		i := sort.SearchStrings(c.keys, key)
		c.keys = append(c.keys, "")
		copy(c.keys[i+1:], c.keys[i:])
		c.keys[i] = key
	}
	c.byKey[key] = p
}

// floor returns the greatest key not after key, if there is one.
func (c *pageCopies[P]) floor(key string) (string, bool) {
	i := sort.SearchStrings(c.keys, key)
	if i < len(c.keys) && c.keys[i] == key {
		return key, true
	}
	if i == 0 {
		return "", false
	}
	return c.keys[i-1], true
}

func (c *pageCopies[P]) reset() { *c = pageCopies[P]{} }
