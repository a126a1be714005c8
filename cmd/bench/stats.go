package main

import (
	"math"
	"slices"
	"sort"
)

// percentile returns the q-quantile (0..1) of xs by linear interpolation
// between closest ranks; NaN for no data. xs is not modified.
func percentile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return sortedPercentile(s, q)
}

func sortedPercentile(s []float64, q float64) float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	q = min(max(q, 0), 1)
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(s)-1)
	frac := pos - float64(lo)
	return s[lo] + (s[hi]-s[lo])*frac
}

// summary is the min, median and max of a figure's runs.
type summary struct {
	Min, Median, Max float64
	N                int
}

func summarize(xs []float64) summary {
	var clean []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			clean = append(clean, x)
		}
	}
	if len(clean) == 0 {
		return summary{Min: math.NaN(), Median: math.NaN(), Max: math.NaN()}
	}
	slices.Sort(clean)
	return summary{Min: clean[0], Median: sortedPercentile(clean, 0.5), Max: clean[len(clean)-1], N: len(clean)}
}

// bucket is one cumulative histogram bucket: Count observations ≤ Upper.
type bucket struct {
	Upper float64 `json:"le"`
	Count uint64  `json:"count"`
}

// histDelta subtracts an earlier snapshot of the same cumulative histogram
// from a later one. Buckets are matched by position; a missing earlier
// snapshot counts as zero.
func histDelta(later, earlier []bucket) []bucket {
	out := make([]bucket, len(later))
	for i, b := range later {
		out[i] = b
		if i < len(earlier) && earlier[i].Upper == b.Upper {
			out[i].Count = b.Count - min(earlier[i].Count, b.Count)
		}
	}
	return out
}

// histQuantile estimates the q-quantile of a cumulative histogram (buckets
// sorted by Upper, the last one +Inf, or with total as the count of all
// observations), interpolating linearly inside the bucket, with 0 as the
// lower bound of the first. A quantile in the +Inf bucket is reported as
// the largest finite bound, with inf true. NaN for no observations.
func histQuantile(bs []bucket, total uint64, q float64) (v float64, inf bool) {
	if total == 0 {
		return math.NaN(), false
	}
	rank := q * float64(total)
	lower, below := 0.0, uint64(0)
	for _, b := range bs {
		if math.IsInf(b.Upper, 1) {
			break
		}
		if float64(b.Count) >= rank && b.Count > below {
			frac := (rank - float64(below)) / float64(b.Count-below)
			return lower + (b.Upper-lower)*min(max(frac, 0), 1), false
		}
		lower, below = b.Upper, b.Count
	}
	return lower, true
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
