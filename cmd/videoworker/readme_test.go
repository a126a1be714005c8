package main

import (
	"os"
	"strings"
	"testing"
)

// TestREADMEListsEveryVariable keeps the README's configuration table true:
// every variable the program reads is in it.
func TestREADMEListsEveryVariable(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	table := string(readme)
	if i := strings.Index(table, "## Configuration"); i >= 0 {
		table = table[i:]
	}
	for name := range envNames(t) {
		if !strings.Contains(table, "`"+name+"`") {
			t.Errorf("README's configuration section does not list %s", name)
		}
	}
}
