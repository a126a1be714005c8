package main

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
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

// markdownFiles are the repository's documentation: the README and every
// Markdown file under docs/, as paths relative to the repository root.
func markdownFiles(t *testing.T) []string {
	t.Helper()
	files := []string{"README.md"}
	docs, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		files = append(files, path.Join("docs", filepath.Base(d)))
	}
	return files
}

// mdLink matches an inline Markdown link or image: [text](target) or
// [text](target "title").
var mdLink = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)

// headingAnchors returns the anchors GitHub gives the headings of a
// Markdown document: lower case, punctuation dropped, spaces as hyphens,
// a repeated heading suffixed -1, -2, …
func headingAnchors(doc string) map[string]bool {
	anchors := map[string]bool{}
	seen := map[string]int{}
	inFence := false
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
			continue
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(title) {
			switch {
			case unicode.IsLetter(r), unicode.IsDigit(r), r == '-', r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteByte('-')
			}
		}
		a := b.String()
		if n := seen[a]; n > 0 {
			anchors[fmt.Sprintf("%s-%d", a, n)] = true
		} else {
			anchors[a] = true
		}
		seen[a]++
	}
	return anchors
}

// TestDocsLinksStayInRepository: every relative link of the README and of
// docs/*.md names a file of the repository (the README once pointed at
// ../shared/…, outside it), and every #anchor names a heading of the file
// it points into, so moving a section cannot leave a link dangling.
func TestDocsLinksStayInRepository(t *testing.T) {
	const root = "../.."
	anchors := map[string]map[string]bool{}
	anchorsOf := func(file string) map[string]bool {
		if a, ok := anchors[file]; ok {
			return a
		}
		b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(file)))
		if err != nil {
			t.Fatal(err)
		}
		anchors[file] = headingAnchors(string(b))
		return anchors[file]
	}
	for _, file := range markdownFiles(t) {
		b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(file)))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mdLink.FindAllStringSubmatch(string(b), -1) {
			link := m[1]
			if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			target, anchor, _ := strings.Cut(link, "#")
			clean := file
			if target != "" {
				clean = path.Clean(path.Join(path.Dir(file), target))
				if path.IsAbs(target) || clean == ".." || strings.HasPrefix(clean, "../") {
					t.Errorf("%s links outside the repository: %s", file, link)
					continue
				}
				if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(clean))); err != nil {
					t.Errorf("%s links to a missing file: %s", file, link)
					continue
				}
			}
			if anchor != "" && strings.HasSuffix(clean, ".md") && !anchorsOf(clean)[anchor] {
				t.Errorf("%s links to a missing heading: %s (no #%s in %s)", file, link, anchor, clean)
			}
		}
	}
}
