package generator

import (
	"math"
	"testing"
	"time"

	"umlsd/config"
)

func TestWithMargin(t *testing.T) {
	for _, tc := range []struct {
		in   config.Timespan
		want string
	}{
		{config.Timespan{D: 90 * time.Second}, "2min"},
		{config.Timespan{D: 5*time.Minute + 500*time.Millisecond}, "5min 30s 500ms"},
		{config.Timespan{Infinite: true}, "infinity"},
		// Would overflow with the margin: an empty value would make
		// systemd ignore it and use the template's timeout.
		{config.Timespan{D: math.MaxInt64 - time.Second}, "infinity"},
	} {
		if got := withMargin(tc.in, 30*time.Second); got != tc.want {
			t.Errorf("withMargin(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
