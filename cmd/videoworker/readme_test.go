package main

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
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

// makeTargets reads the Makefile's targets and their `make help` lines
// ("target: … ## help"), and the "#>" lines help prints above them.
func makeTargets(t *testing.T) (help map[string]string, header string) {
	t.Helper()
	b, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	help = map[string]string{}
	target := regexp.MustCompile(`^([a-zA-Z_-]+):.*## (.*)$`)
	var head []string
	for _, line := range strings.Split(string(b), "\n") {
		if m := target.FindStringSubmatch(line); m != nil {
			help[m[1]] = m[2]
		}
		if rest, ok := strings.CutPrefix(line, "#> "); ok {
			head = append(head, rest)
		}
	}
	return help, strings.Join(head, "\n")
}

// approxDuration matches a time quoted as an estimate ("about 10 min",
// "~6-9 min", "about 2.5 minutes"); normDuration writes it one way.
var approxDuration = regexp.MustCompile(`(?:about|~)\s*(\d+(?:\.\d+)?(?:\s*[-–]\s*\d+(?:\.\d+)?)?)\s*(minutes|minute|min|seconds|second|s)\b`)

func normDuration(m []string) string {
	n := strings.ReplaceAll(strings.ReplaceAll(m[1], " ", ""), "–", "-")
	unit := "min"
	if strings.HasPrefix(m[2], "s") {
		unit = "s"
	}
	return n + " " + unit
}

// TestMakeHelpAgreesWithDocs: `make help` and the documentation say the
// same. Every time quoted as an estimate in a paragraph after a "`make X`"
// (up to the next "`make …`") of README.md or docs/*.md is one the Makefile's
// help line of X gives; the Go version the README and `make help` require
// is go.mod's; and the README's set-up section names everything test-deps
// installs.
func TestMakeHelpAgreesWithDocs(t *testing.T) {
	help, header := makeTargets(t)
	mention := regexp.MustCompile("`make ([a-z-]+)")
	for _, file := range markdownFiles(t) {
		b, err := os.ReadFile(filepath.Join("../..", filepath.FromSlash(file)))
		if err != nil {
			t.Fatal(err)
		}
		for _, para := range regexp.MustCompile(`\n\s*\n`).Split(string(b), -1) {
			ms := mention.FindAllStringSubmatchIndex(para, -1)
			for i, m := range ms {
				name := para[m[2]:m[3]]
				end := len(para)
				if i+1 < len(ms) {
					end = ms[i+1][0]
				}
				for _, d := range approxDuration.FindAllStringSubmatch(para[m[1]:end], -1) {
					h, ok := help[name]
					if !ok {
						t.Errorf("%s quotes %q for `make %s`, which is not a target with a help line", file, d[0], name)
						continue
					}
					var want []string
					for _, hd := range approxDuration.FindAllStringSubmatch(h, -1) {
						want = append(want, normDuration(hd))
					}
					if !slices.Contains(want, normDuration(d)) {
						t.Errorf("%s quotes %q for `make %s`; make help says %q", file, d[0], name, h)
					}
				}
			}
		}
	}

	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
	if goVersion == nil {
		t.Fatal("go.mod has no go line")
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	setup := string(readme)
	start := strings.Index(setup, "## Set up")
	if start < 0 {
		t.Fatal(`README has no "## Set up" section`)
	}
	setup = setup[start:]
	if end := strings.Index(setup[1:], "\n## "); end >= 0 {
		setup = setup[:end+1]
	}
	wantGo := "Go " + string(goVersion[1]) + " or newer"
	if !strings.Contains(setup, wantGo) {
		t.Errorf("README's set-up section does not say %q (go.mod)", wantGo)
	}
	if !strings.Contains(header, wantGo) {
		t.Errorf("make help does not say %q (go.mod); it says %q", wantGo, header)
	}
	deps, ok := help["test-deps"]
	if !ok {
		t.Fatal("the Makefile has no test-deps target with a help line")
	}
	deps = regexp.MustCompile(`\([^)]*\)`).ReplaceAllString(deps, "")
	_, list, _ := strings.Cut(deps, ":")
	for _, dep := range strings.Split(list, ",") {
		if dep = strings.TrimSpace(dep); dep != "" && !strings.Contains(setup, dep) {
			t.Errorf("make test-deps installs %s; README's set-up section does not say so", dep)
		}
	}
}

// TestDocsIndexListsEveryPage: docs/README.md links every page of docs/,
// so a page moved out of the front page can be found from it.
func TestDocsIndexListsEveryPage(t *testing.T) {
	index, err := os.ReadFile("../../docs/README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range markdownFiles(t) {
		name := path.Base(file)
		if !strings.HasPrefix(file, "docs/") || name == "README.md" {
			continue
		}
		if !strings.Contains(string(index), "]("+name+")") {
			t.Errorf("docs/README.md does not link %s", file)
		}
	}
}
