package backend

import "runtime/debug"

// DefaultVersion is the version a binary reports when it is not told one:
// the main module's version from the build info (set by `go install
// module@version`), else the VCS revision it was built from (12 hex digits,
// "-dirty" when the tree had changes), else "dev".
func DefaultVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	return rev + dirty
}
