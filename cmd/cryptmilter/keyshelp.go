package main

import "strings"

// keysSubUsage is the help of one keys subcommand ("cryptmilter keys
// import -h"), cut out of keysUsage so that the two cannot disagree: the
// subcommand's usage lines, its paragraph and its examples. name is the
// flag set's name ("cryptmilter keys import") or the bare subcommand. An
// unknown name gives the whole keysUsage.
func keysSubUsage(name string) string {
	sub := name[strings.LastIndexByte(name, ' ')+1:]
	var usage, para, examples []string
	section := ""
	inPara := false
	for _, l := range strings.Split(keysUsage, "\n") {
		switch {
		case l == "Usage:" || l == "Examples:":
			section, inPara = l, false
			continue
		case l == "":
			if section == "Usage:" {
				section = ""
			}
			inPara = false
			continue
		}
		fields := strings.Fields(l)
		switch section {
		case "Usage:":
			// "cryptmilter keys [-c FILE] import …": the first word after
			// "keys" and its bracketed options.
			if usageSubcommand(fields) == sub {
				usage = append(usage, strings.TrimSpace(l))
			}
		case "Examples:":
			if strings.Contains(l, "cryptmilter keys "+sub+" ") || strings.HasSuffix(l, "cryptmilter keys "+sub) {
				examples = append(examples, l)
			}
		default:
			// The paragraphs: "import   adds …" and indented continuation lines.
			if !strings.HasPrefix(l, " ") {
				inPara = len(fields) > 0 && fields[0] == sub
			}
			if inPara {
				para = append(para, l)
			}
		}
	}
	if len(usage) == 0 {
		return keysUsage
	}
	var b strings.Builder
	for i, u := range usage {
		if i == 0 {
			b.WriteString("Usage: " + u + "\n")
		} else {
			b.WriteString("       " + u + "\n")
		}
	}
	if len(para) > 0 {
		b.WriteString("\n" + strings.Join(para, "\n") + "\n")
	}
	if len(examples) > 0 {
		b.WriteString("\nExamples:\n" + strings.Join(examples, "\n") + "\n")
	}
	b.WriteString("\n\"cryptmilter keys -h\" describes every subcommand.\n")
	return b.String()
}

// usageSubcommand returns the subcommand of a usage line's fields.
func usageSubcommand(fields []string) string {
	for i := 0; i < len(fields); i++ {
		if fields[i] != "keys" {
			continue
		}
		depth := 0
		for _, f := range fields[i+1:] {
			depth += strings.Count(f, "[") - strings.Count(f, "]")
			if depth == 0 && !strings.HasSuffix(f, "]") {
				return f
			}
		}
	}
	return ""
}
