package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/lmittmann/tint"
)

// newLogger returns the program's logger: tint for a terminal, JSON
// otherwise (LOG_FORMAT=auto), or as configured.
func newLogger(w io.Writer, format, level string) *slog.Logger {
	lvl, _ := parseLevel(level)
	if format == "auto" {
		format = "json"
		if isTerminal(w) {
			format = "text"
		}
	}
	if format == "text" {
		return slog.New(tint.NewTextHandler(w, &tint.Options{Level: lvl, TimeFormat: time.TimeOnly, NoColor: !isTerminal(w), ReplaceAttr: readableAttr}))
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl, ReplaceAttr: readableAttr}))
}

// readableAttr writes values as people read them: a duration as "30s"
// (JSON would give nanoseconds) and a map as "k=v, k=v" sorted by key
// (text would give Go's map[…] syntax; JSON keeps an object).
func readableAttr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindDuration:
		a.Value = slog.StringValue(a.Value.Duration().String())
	case slog.KindAny:
		if v := reflect.ValueOf(a.Value.Any()); v.Kind() == reflect.Map {
			a.Value = slog.StringValue(mapText(v))
		}
	}
	return a
}

// mapText is "k=v, k=v" with the keys sorted.
func mapText(v reflect.Value) string {
	parts := make([]string, 0, v.Len())
	for it := v.MapRange(); it.Next(); {
		parts = append(parts, fmt.Sprintf("%v=%v", it.Key(), it.Value()))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return 0, fmt.Errorf("unknown level %q", s)
	}
	return l, nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
