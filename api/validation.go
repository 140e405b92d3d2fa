package api

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
)

// Limits enforced by validation. They are generous; their point is that a
// typo fails loudly instead of starving a node.
const (
	MaxNameLength    = 63
	MaxConcurrency   = 10000
	MaxQueueDepth    = 1000000
	MinMemoryBytes   = 4 << 20
	MaxMemoryBytes   = 1 << 40
	MaxCPUMillicores = 256 * 1000
	MaxTimeout       = time.Hour
	MaxEnvVars       = 256
	MaxEnvBytes      = 64 << 10
	MaxLabels        = 64
)

// Defaults filled in by SetDefaults.
const (
	DefaultCPU     = "100m"
	DefaultMemory  = "128Mi"
	DefaultTimeout = 5 * time.Minute
)

var (
	dns1123Label = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)
	envName      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	labelKey     = regexp.MustCompile(`^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	labelValue   = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)
	revisionName = regexp.MustCompile(`^(.+)-(\d{5,})$`)
	imageDigest  = regexp.MustCompile(`^[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$`)
)

// NameRule is the sentence that explains a valid name, for error messages.
const NameRule = "must be 1 to 63 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit"

// ValidateName checks a DNS-1123 label, the rule for every object name.
func ValidateName(s string) error {
	if len(s) == 0 || len(s) > MaxNameLength || !dns1123Label.MatchString(s) {
		return fmt.Errorf("%s", NameRule)
	}
	return nil
}

// RevisionName is the name of a function's n-th revision: "hello-00003".
func RevisionName(function string, n int64) string {
	return fmt.Sprintf("%s-%05d", function, n)
}

// ParseRevisionName splits "hello-00003" into "hello" and 3.
func ParseRevisionName(rev string) (function string, n int64, ok bool) {
	m := revisionName.FindStringSubmatch(rev)
	if m == nil {
		return "", 0, false
	}
	n, err := strconv.ParseInt(m[2], 10, 64)
	if err != nil || n < 1 {
		return "", 0, false
	}
	return m[1], n, true
}

// validator collects field errors.
type validator struct{ errs FieldErrors }

func (v *validator) add(field, format string, args ...any) {
	v.errs = append(v.errs, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (v *validator) result() error {
	if len(v.errs) == 0 {
		return nil
	}
	return v.errs
}

func (v *validator) meta(m *ObjectMeta, namespaced bool) {
	if err := ValidateName(m.Name); err != nil {
		if m.Name == "" {
			v.add("metadata.name", "is required")
		} else {
			v.add("metadata.name", "%q %s", m.Name, NameRule)
		}
	}
	if namespaced && m.Namespace != "" {
		if err := ValidateName(m.Namespace); err != nil {
			v.add("metadata.namespace", "%q %s", m.Namespace, NameRule)
		}
	}
	if !namespaced && m.Namespace != "" {
		v.add("metadata.namespace", "must be empty: this kind has no namespace")
	}
	v.labels("metadata.labels", m.Labels)
}

// labels checks a map of labels, or of a selector's pairs, named field.
func (v *validator) labels(field string, labels map[string]string) {
	if len(labels) > MaxLabels {
		v.add(field, "has %d labels, at most %d are allowed", len(labels), MaxLabels)
	}
	// Sorted, so that the same object always gets the same errors in the
	// same order (the first is the one an Invalid answer names).
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		val := labels[k]
		if err := ValidateLabel(k, val); err != nil {
			f := field
			if len(k) <= 253 && labelKey.MatchString(k) {
				f += "[" + k + "]"
			}
			v.add(f, "%v", err)
		}
	}
}

// ValidateLabel checks one label's key and value (or a node selector's
// pair): a key of letters, digits, '-', '_' and '.' after an optional DNS
// prefix and '/', and a value of at most 63 such characters.
func ValidateLabel(key, value string) error {
	if len(key) > 253 || !labelKey.MatchString(key) {
		return fmt.Errorf("key %q must be an optional DNS prefix and '/', then letters, digits, '-', '_' or '.'", key)
	}
	if len(value) > 63 || !labelValue.MatchString(value) {
		return fmt.Errorf("value %q must be at most 63 letters, digits, '-', '_' or '.'", value)
	}
	return nil
}

// duration checks the range of a duration field. Its syntax was checked
// when the object was decoded (see Duration); zero means the field's
// default and is always valid.
func (v *validator) duration(field string, d Duration, lo, hi time.Duration) {
	if d.Duration == 0 {
		return
	}
	if d.Duration < lo || d.Duration > hi {
		v.add(field, "must be between %s and %s, got %s", lo, hi, d)
	}
}

// SetDefaults fills the fields of a FunctionSpec that the user left out, so
// that two deploys meaning the same thing compare equal.
func SetDefaults(s *FunctionSpec) {
	if s.Port == 0 {
		s.Port = DefaultPort
	}
	if s.Resources.CPU == "" {
		s.Resources.CPU = DefaultCPU
	}
	if s.Resources.Memory == "" {
		s.Resources.Memory = DefaultMemory
	}
	if s.Timeout.Duration == 0 {
		s.Timeout = Duration{DefaultTimeout}
	}
	if s.Scaling.Metric == "" {
		s.Scaling.Metric = MetricConcurrency
	}
	if s.Canary != nil {
		c := *s.Canary
		c.setDefaults()
		s.Canary = &c
	}
}

// ValidateFunction checks every field of a Function and reports every
// problem at once as FieldErrors.
func ValidateFunction(f *Function) error {
	var v validator
	v.meta(&f.Metadata, true)
	v.functionSpec("spec", &f.Spec)
	return v.result()
}

func (v *validator) functionSpec(p string, s *FunctionSpec) {
	switch {
	case s.Image == "":
		v.add(p+".image", "is required: name an image like \"registry.example/hello:v1\"")
	case strings.TrimSpace(s.Image) != s.Image:
		v.add(p+".image", "%q must not have spaces", s.Image)
	default:
		if _, err := name.ParseReference(s.Image); err != nil {
			v.add(p+".image", "%q is not an image reference: %v", s.Image, err)
		}
	}
	for i, c := range s.Command {
		if strings.ContainsRune(c, 0) {
			v.add(fmt.Sprintf("%s.command[%d]", p, i), "must not contain NUL")
		}
	}
	for i, a := range s.Args {
		if strings.ContainsRune(a, 0) {
			v.add(fmt.Sprintf("%s.args[%d]", p, i), "must not contain NUL")
		}
	}
	if len(s.Env) > MaxEnvVars {
		v.add(p+".env", "has %d variables, at most %d are allowed", len(s.Env), MaxEnvVars)
	}
	seen := make(map[string]bool, len(s.Env))
	size := 0
	for i, e := range s.Env {
		f := fmt.Sprintf("%s.env[%d].name", p, i)
		switch {
		case !envName.MatchString(e.Name):
			v.add(f, "%q must be letters, digits and '_', not starting with a digit", e.Name)
		case e.Name == "PORT":
			v.add(f, "PORT is set by Surge from spec.port")
		case seen[e.Name]:
			v.add(f, "%q is set twice", e.Name)
		}
		seen[e.Name] = true
		if strings.ContainsRune(e.Value, 0) {
			v.add(fmt.Sprintf("%s.env[%d].value", p, i), "must not contain NUL")
		}
		size += len(e.Name) + len(e.Value)
	}
	if size > MaxEnvBytes {
		v.add(p+".env", "is %d bytes, at most %d are allowed", size, MaxEnvBytes)
	}
	if s.Port != 0 && (s.Port < 1 || s.Port > 65535) {
		v.add(p+".port", "must be between 1 and 65535")
	}
	if s.Resources.CPU != "" {
		if m, err := ParseCPU(s.Resources.CPU); err != nil {
			v.add(p+".resources.cpu", "%v", err)
		} else if m < 1 || m > MaxCPUMillicores {
			v.add(p+".resources.cpu", "must be between 1m and %d cores, got %q", MaxCPUMillicores/1000, s.Resources.CPU)
		}
	}
	if s.Resources.Memory != "" {
		if b, err := ParseMemory(s.Resources.Memory); err != nil {
			v.add(p+".resources.memory", "%v", err)
		} else if b < MinMemoryBytes || b > MaxMemoryBytes {
			v.add(p+".resources.memory", "must be between 4Mi and 1Ti, got %q", s.Resources.Memory)
		}
	}
	if s.Concurrency < 0 || s.Concurrency > MaxConcurrency {
		v.add(p+".concurrency", "must be between 0 (no limit) and %d", MaxConcurrency)
	}
	if s.QueueDepth < 0 || s.QueueDepth > MaxQueueDepth {
		v.add(p+".queueDepth", "must be between 0 (the gateway's) and %d", MaxQueueDepth)
	}
	v.duration(p+".timeout", s.Timeout, time.Second, MaxTimeout)
	if r := s.Readiness; r != nil {
		if r.Path != "" && (!strings.HasPrefix(r.Path, "/") || strings.ContainsAny(r.Path, " \t\r\n")) {
			v.add(p+".readiness.path", "%q must start with '/' and have no spaces", r.Path)
		}
		v.duration(p+".readiness.period", r.Period, time.Second, 5*time.Minute)
	}
	sc := &s.Scaling
	if sc.MinScale < 0 {
		v.add(p+".scaling.minScale", "must not be negative")
	}
	if sc.MaxScale < 0 {
		v.add(p+".scaling.maxScale", "must not be negative (0 means no limit)")
	}
	if sc.MaxScale > 0 && sc.MinScale > sc.MaxScale {
		v.add(p+".scaling.minScale", "must not exceed scaling.maxScale (%d > %d)", sc.MinScale, sc.MaxScale)
	}
	switch sc.Metric {
	case "", MetricConcurrency, MetricRPS:
	default:
		v.add(p+".scaling.metric", "%q must be %q or %q", sc.Metric, MetricConcurrency, MetricRPS)
	}
	if sc.Target < 0 || sc.Target > 1e6 {
		v.add(p+".scaling.target", "must be between 0 (the default) and 1000000")
	}
	v.duration(p+".scaling.scaleToZeroGrace", sc.ScaleToZeroGrace, 0, MaxTimeout)
	v.duration(p+".scaling.stableWindow", sc.StableWindow, 6*time.Second, MaxTimeout)
	seenSecret := map[string]bool{}
	for i, n := range s.ImagePullSecrets {
		f := fmt.Sprintf("%s.imagePullSecrets[%d]", p, i)
		switch {
		case ValidateName(n) != nil:
			v.add(f, "%q %s", n, NameRule)
		case seenSecret[n]:
			v.add(f, "%q is named twice", n)
		}
		seenSecret[n] = true
	}
	v.labels(p+".nodeSelector", s.NodeSelector)
	if s.Canary != nil {
		v.canary(p+".canary", s.Canary)
	}
	if s.KeepRevisions < 0 {
		v.add(p+".keepRevisions", "must not be negative (0 keeps every revision)")
	}
}

// MaxNodeImages bounds NodeStatus.Images, so that a node's object stays
// small however many images its agent has pulled.
const MaxNodeImages = 64

// ValidateNode checks a Node and reports every problem at once.
func ValidateNode(n *Node) error {
	var v validator
	v.meta(&n.Metadata, false)
	if len(n.Status.Images) > MaxNodeImages {
		v.add("status.images", "has %d images, at most %d are allowed", len(n.Status.Images), MaxNodeImages)
	}
	for i, d := range n.Status.Images {
		if !imageDigest.MatchString(d) {
			v.add(fmt.Sprintf("status.images[%d]", i), "%q is not a digest like \"sha256:\" and 64 hex digits", d)
		}
	}
	return v.result()
}

// ValidatePullSecret checks a PullSecret and reports every problem at once.
func ValidatePullSecret(ps *PullSecret) error {
	var v validator
	v.meta(&ps.Metadata, true)
	s := &ps.Spec
	switch {
	case s.Registry == "":
		v.add("spec.registry", "is required: the registry's host[:port], e.g. \"ghcr.io\"")
	case strings.ContainsAny(s.Registry, "/ \t@") || strings.Contains(s.Registry, "://"):
		v.add("spec.registry", "%q must be a host[:port] without scheme or path, e.g. \"ghcr.io\"", s.Registry)
	default:
		if _, err := name.NewRegistry(s.Registry); err != nil {
			v.add("spec.registry", "%q is not a registry host: %v", s.Registry, err)
		}
	}
	if s.Username == "" && s.Password == "" {
		v.add("spec.password", "is required: a password or token (and a username if the registry wants one)")
	}
	if strings.ContainsAny(s.Username, ":\r\n") {
		v.add("spec.username", "must not contain ':' or line breaks")
	}
	if strings.ContainsAny(s.Password, "\r\n") {
		v.add("spec.password", "must not contain line breaks")
	}
	return v.result()
}

// TagHost is the first label of the host a tagged revision answers at:
// "TAG-FUNCTION", as Knative names tag routes.
func TagHost(tag, function string) string { return tag + "-" + function }

// ValidateTraffic checks a Traffic object of the named function.
func ValidateTraffic(t *Traffic) error {
	var v validator
	v.meta(&t.Metadata, true)
	if len(t.Spec.Targets) == 0 {
		v.add("spec.targets", "is required: name at least one revision")
	}
	sum := int32(0)
	seen, tags := map[string]bool{}, map[string]bool{}
	for i, tt := range t.Spec.Targets {
		f := fmt.Sprintf("spec.targets[%d]", i)
		fn, _, ok := ParseRevisionName(tt.Revision)
		switch {
		case !ok:
			v.add(f+".revision", "%q is not a revision name like %q", tt.Revision, RevisionName(t.Metadata.Name, 1))
		case fn != t.Metadata.Name:
			v.add(f+".revision", "%q is not a revision of function %q", tt.Revision, t.Metadata.Name)
		case seen[tt.Revision]:
			v.add(f+".revision", "%q is named twice", tt.Revision)
		}
		seen[tt.Revision] = true
		if tt.Percent < 0 || tt.Percent > 100 {
			v.add(f+".percent", "must be between 0 and 100")
		}
		sum += tt.Percent
		if tt.Tag == "" {
			continue
		}
		switch {
		case ValidateName(tt.Tag) != nil:
			v.add(f+".tag", "%q %s", tt.Tag, NameRule)
		case len(tt.Tag)+1+len(t.Metadata.Name) > MaxNameLength:
			v.add(f+".tag", "%q makes the host name %q longer than %d characters", tt.Tag, TagHost(tt.Tag, t.Metadata.Name), MaxNameLength)
		case tags[tt.Tag]:
			v.add(f+".tag", "%q tags two revisions: a tag names one", tt.Tag)
		}
		tags[tt.Tag] = true
	}
	if len(t.Spec.Targets) > 0 && sum != 100 {
		v.add("spec.targets", "percentages must add up to 100, they add up to %d", sum)
	}
	return v.result()
}

// ValidateScale checks a Scale object.
func ValidateScale(s *Scale) error {
	var v validator
	if _, _, ok := ParseRevisionName(s.Metadata.Name); !ok {
		v.add("metadata.name", "%q is not a revision name like \"hello-00001\"", s.Metadata.Name)
	}
	if s.Spec.Replicas < 0 {
		v.add("spec.replicas", "must not be negative")
	}
	return v.result()
}
