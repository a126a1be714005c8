package main

import (
	"os"
	"path"
	"path/filepath"
	"regexp"
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

// TestREADMELinksStayInRepository: every relative link of the README names
// a file of the repository (one pointed at ../shared/…, outside it).
func TestREADMELinksStayInRepository(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`\]\(([^)\s]+)\)`).FindAllStringSubmatch(string(readme), -1) {
		target := m[1]
		if strings.HasPrefix(target, "#") || strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
			continue
		}
		target, _, _ = strings.Cut(target, "#")
		clean := path.Clean(target)
		if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
			t.Errorf("README links outside the repository: %s", m[1])
			continue
		}
		if _, err := os.Stat(filepath.Join("../..", filepath.FromSlash(clean))); err != nil {
			t.Errorf("README links to a missing file: %s", m[1])
		}
	}
}
