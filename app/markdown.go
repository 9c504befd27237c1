package app

import (
	"regexp"
	"strings"

	ui "github.com/maxence-charriere/go-app/v9/pkg/app"
)

// The subset of markdown that the study reports use: headings, paragraphs,
// pipe tables, images on their own line, indented or fenced code, bullet
// lists (an item may go on over several lines), and inline **bold**,
// *emphasis*, `code` and [links](url). Everything becomes
// go-app elements, never raw HTML, so a report cannot inject markup.

var (
	mdImage  = regexp.MustCompile(`^!\[([^\]]*)\]\(([^)\s]+)\)$`)
	mdInline = regexp.MustCompile("\\*\\*([^*]+)\\*\\*|`([^`]+)`|\\[([^\\]]+)\\]\\(([^)\\s]+)\\)|\\*([^*\\s](?:[^*]*[^*\\s])?)\\*")
	mdRule   = regexp.MustCompile(`^\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?$`)
	mdNumber = regexp.MustCompile(`^[-+]?[0-9.]+(e[-+]?[0-9]+)?[%×]?$`)
)

// markdown renders md. image maps an image's address to one the browser
// can fetch, or to "" to leave the image out (the app fetches nothing
// beyond its own origin); link maps a relative link's address to one the
// app can open, or to "" to show the link's text alone. An absolute link
// (with "://") is kept.
func markdown(md string, image, link func(string) string) []ui.UI {
	resolve := refs{image, link}
	lines := strings.Split(strings.ReplaceAll(md, "\r\n", "\n"), "\n")
	var out []ui.UI
	var para []string
	flush := func() {
		if len(para) > 0 {
			out = append(out, ui.P().Body(inline(strings.Join(para, " "), resolve)...))
			para = nil
		}
	}
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		trim := strings.TrimSpace(line)
		switch {
		case trim == "":
			flush()
		case strings.HasPrefix(trim, "```"):
			flush()
			var code []string
			for i++; i < len(lines) && !strings.HasPrefix(strings.TrimSpace(lines[i]), "```"); i++ {
				code = append(code, lines[i])
			}
			out = append(out, ui.Pre().Body(ui.Code().Text(strings.Join(code, "\n"))))
		case strings.HasPrefix(line, "    ") || strings.HasPrefix(line, "\t"):
			flush()
			var code []string
			for ; i < len(lines) && (strings.HasPrefix(lines[i], "    ") || strings.HasPrefix(lines[i], "\t") || strings.TrimSpace(lines[i]) == ""); i++ {
				code = append(code, strings.TrimPrefix(strings.TrimPrefix(lines[i], "    "), "\t"))
			}
			i--
			out = append(out, ui.Pre().Body(ui.Code().Text(strings.TrimRight(strings.Join(code, "\n"), "\n"))))
		case strings.HasPrefix(trim, "#"):
			flush()
			level := len(trim) - len(strings.TrimLeft(trim, "#"))
			text := inline(strings.TrimSpace(trim[level:]), resolve)
			switch level {
			case 1:
				out = append(out, ui.H2().Body(text...))
			case 2:
				out = append(out, ui.H3().Body(text...))
			default:
				out = append(out, ui.H4().Body(text...))
			}
		case mdImage.MatchString(trim):
			flush()
			m := mdImage.FindStringSubmatch(trim)
			if src := resolve.image(m[2]); src != "" {
				out = append(out, ui.P().Body(ui.Img().Src(src).Alt(m[1])))
			} else {
				out = append(out, ui.P().Class("muted").Text("[image: "+m[1]+"]"))
			}
		case strings.HasPrefix(trim, "|") && i+1 < len(lines) && mdRule.MatchString(strings.TrimSpace(lines[i+1])):
			flush()
			head := cells(trim)
			var rows [][]string
			for i += 2; i < len(lines) && strings.HasPrefix(strings.TrimSpace(lines[i]), "|"); i++ {
				rows = append(rows, cells(strings.TrimSpace(lines[i])))
			}
			i--
			out = append(out, table(head, rows, resolve))
		case strings.HasPrefix(trim, "- ") || strings.HasPrefix(trim, "* "):
			flush()
			// An item goes on over the lines after it until a blank line,
			// the next item or a line that starts another block.
			var items []string
			for ; i < len(lines); i++ {
				t := strings.TrimSpace(lines[i])
				switch {
				case strings.HasPrefix(t, "- ") || strings.HasPrefix(t, "* "):
					items = append(items, t[2:])
					continue
				case t != "" && !startsBlock(t):
					items[len(items)-1] += " " + t
					continue
				}
				break
			}
			i--
			lis := make([]ui.UI, len(items))
			for k, it := range items {
				lis[k] = ui.Li().Body(inline(it, resolve)...)
			}
			out = append(out, ui.Ul().Body(lis...))
		default:
			para = append(para, trim)
		}
	}
	flush()
	return out
}

// startsBlock says whether a trimmed line starts a block of its own (a
// heading, a fence, a table row or an image) rather than going on with the
// text before it.
func startsBlock(t string) bool {
	return strings.HasPrefix(t, "#") || strings.HasPrefix(t, "```") || strings.HasPrefix(t, "|") || mdImage.MatchString(t)
}

// cells splits a table row.
func cells(row string) []string {
	row = strings.TrimSuffix(strings.TrimPrefix(row, "|"), "|")
	parts := strings.Split(row, "|")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
	}
	return parts
}

// refs resolves a markdown file's addresses (see markdown).
type refs struct{ image, link func(string) string }

func table(head []string, rows [][]string, resolve refs) ui.UI {
	ths := make([]ui.UI, len(head))
	for i, h := range head {
		ths[i] = ui.Th().Body(inline(h, resolve)...)
	}
	trs := make([]ui.UI, len(rows))
	for r, row := range rows {
		tds := make([]ui.UI, len(row))
		for i, c := range row {
			td := ui.Td().Body(inline(c, resolve)...)
			if mdNumber.MatchString(strings.Trim(c, "*")) {
				td = td.Class("num")
			}
			tds[i] = td
		}
		trs[r] = ui.Tr().Body(tds...)
	}
	return ui.Table().Body(ui.THead().Body(ui.Tr().Body(ths...)), ui.TBody().Body(trs...))
}

// inline renders **bold**, *emphasis*, `code` and [links](url) within a
// line.
func inline(s string, resolve refs) []ui.UI {
	var out []ui.UI
	last := 0
	for _, m := range mdInline.FindAllStringSubmatchIndex(s, -1) {
		if m[0] > last {
			out = append(out, ui.Text(s[last:m[0]]))
		}
		switch {
		case m[2] >= 0:
			out = append(out, ui.B().Text(s[m[2]:m[3]]))
		case m[4] >= 0:
			out = append(out, ui.Code().Text(s[m[4]:m[5]]))
		case m[10] >= 0:
			out = append(out, ui.Em().Text(s[m[10]:m[11]]))
		default:
			text, href := s[m[6]:m[7]], s[m[8]:m[9]]
			to := href
			if !strings.Contains(href, "://") {
				to = resolve.link(href)
			}
			if to != "" {
				out = append(out, ui.A().Href(to).Text(text))
			} else {
				out = append(out, ui.Span().Class("unlinked").Title(href).Text(text))
			}
		}
		last = m[1]
	}
	if last < len(s) {
		out = append(out, ui.Text(s[last:]))
	}
	return out
}
