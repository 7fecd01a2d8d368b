package avrocodec

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestRFC3339FormattingMatchesTimePackage checks the hand-rolled formatter
// against the time package over the whole supported range.
func TestRFC3339FormattingMatchesTimePackage(t *testing.T) {
	check := func(sec, nsec int64) {
		t.Helper()
		want := time.Unix(sec, nsec).UTC().Format(time.RFC3339Nano)
		if got := string(appendRFC3339UTC(nil, sec, nsec)); got != want {
			t.Fatalf("appendRFC3339UTC(%d, %d) = %s, want %s", sec, nsec, got, want)
		}
		days := sec / secondsPerDay
		if sec%secondsPerDay < 0 {
			days--
		}
		if got, want := string(appendDate(nil, days)), want[:10]; got != want {
			t.Fatalf("appendDate(%d) = %s, want %s", days, got, want)
		}
	}
	edges := []int64{minRFC3339Unix, minRFC3339Unix + 1, maxRFC3339Unix, maxRFC3339Unix - 1, -1, 0, 1,
		-62135596800,         // 0001-01-01
		951782400, 951868800, // 2000-02-29, 2000-03-01
		-2203977600, -2203891200, // 1900-02-28, 1900-03-01 (not a leap year)
		1709633472, 4107542400, // 2024-03-05T10:11:12, 2100-03-01
	}
	for _, sec := range edges {
		for _, nsec := range []int64{0, 1, 10, 100000, 123456789, 999999999, 500000000} {
			check(sec, nsec)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		check(minRFC3339Unix+r.Int64N(maxRFC3339Unix-minRFC3339Unix+1), r.Int64N(1e9))
	}
	// Every day of a 400-year cycle and a bit.
	for days := int64(-150000); days < 150000; days++ {
		check(days*secondsPerDay, 0)
	}
}
