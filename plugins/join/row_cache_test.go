package join

import (
	"fmt"
	"slices"
	"testing"
)

// The cache holds up to rowCacheEntries rows over two generations, a hit
// in the old generation keeps the row, and forget drops a key from both.
func TestRowCacheGenerations(t *testing.T) {
	c := newRowCache()
	key := func(i int) string { return fmt.Sprintf("row.accounts\x00%d", i) }
	for i := range rowCacheEntries / 2 {
		c.put(key(i), &rowState{Version: int64(i)})
	}
	c.put(key(-1), nil) // an absent row is cached too; the generation turns
	if r, ok := c.get(key(7)); !ok || r.Version != 7 {
		t.Fatalf("a row of the old generation: %v, %v", r, ok)
	}
	if r, ok := c.get(key(-1)); !ok || r != nil {
		t.Fatalf("an absent row: %v, %v; want nil, true", r, ok)
	}
	for i := range rowCacheEntries / 2 {
		c.put(key(1_000_000+i), &rowState{}) // two more turns: the old generation goes
	}
	if _, ok := c.get(key(8)); ok {
		t.Error("a row never read again outlived two generations")
	}
	if _, ok := c.get(key(7)); !ok {
		t.Error("a row read in the old generation was dropped with it")
	}
	c.forget(slices.Values([]string{key(7), key(1_000_001)}))
	for _, k := range []string{key(7), key(1_000_001)} {
		if _, ok := c.get(k); ok {
			t.Errorf("%q is still cached after forget", k)
		}
	}
}
