package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/surgeplatform/surge/api"
)

// ManifestFile is the manifest `surge deploy` reads from a folder when it
// is given no name and no image.
const ManifestFile = "surge.yaml"

// Manifest is a surge.yaml: the functions one `surge deploy -f` (or
// `surge apply -f`) makes or changes. Each function's spec is all in the
// file: a field left out takes its default, not the deployed value. An
// unknown field, or a value of the wrong type, is an error naming the
// file, the line and the field.
type Manifest struct {
	// Functions are deployed in order.
	Functions []ManifestFunction `yaml:"functions"`

	path  string         // the file, as given
	lines map[string]int // field path ("functions[0].port") to its line
}

// ManifestFunction is one function of a manifest. Its fields are the API's
// FunctionSpec (docs: `surge deploy --help`), plus where the image comes
// from: exactly one of Build (a Go source folder, relative to the
// manifest), Image (a reference) and Archive (an OCI or docker save
// tarball, relative to the manifest).
type ManifestFunction struct {
	Name             string            `yaml:"name"`
	Labels           map[string]string `yaml:"labels"`
	Build            string            `yaml:"build"`
	Image            string            `yaml:"image"`
	Archive          string            `yaml:"archive"`
	Command          []string          `yaml:"command"`
	Args             []string          `yaml:"args"`
	Env              map[string]string `yaml:"env"`
	Port             int32             `yaml:"port"`
	Resources        ManifestResources `yaml:"resources"`
	Concurrency      int32             `yaml:"concurrency"`
	Timeout          time.Duration     `yaml:"timeout"`
	Readiness        *ManifestProbe    `yaml:"readiness"`
	Scaling          ManifestScaling   `yaml:"scaling"`
	ImagePullSecrets []string          `yaml:"imagePullSecrets"`
	NodeSelector     map[string]string `yaml:"nodeSelector"`
	Canary           *ManifestCanary   `yaml:"canary"`
	KeepRevisions    int32             `yaml:"keepRevisions"`
	HTTPSRedirect    bool              `yaml:"httpsRedirect"`
}

// ManifestCanary is how new revisions take the traffic, as in the API's
// CanaryStrategy.
type ManifestCanary struct {
	Steps                []int32       `yaml:"steps"`
	StepDuration         time.Duration `yaml:"stepDuration"`
	MaxErrorRateIncrease float64       `yaml:"maxErrorRateIncrease"`
	MaxLatencyRatio      float64       `yaml:"maxLatencyRatio"`
	MinLatencyIncrease   time.Duration `yaml:"minLatencyIncrease"`
	MinRequests          int32         `yaml:"minRequests"`
}

// ManifestResources is a replica's cpu and memory, as in the API.
type ManifestResources struct {
	CPU    string `yaml:"cpu"`
	Memory string `yaml:"memory"`
}

// ManifestProbe is the readiness probe, as in the API.
type ManifestProbe struct {
	Path   string        `yaml:"path"`
	Period time.Duration `yaml:"period"`
}

// ManifestScaling is the autoscaling policy, as in the API.
type ManifestScaling struct {
	MinScale         int32         `yaml:"minScale"`
	MaxScale         int32         `yaml:"maxScale"`
	Metric           string        `yaml:"metric"`
	Target           float64       `yaml:"target"`
	ScaleToZeroGrace time.Duration `yaml:"scaleToZeroGrace"`
	StableWindow     time.Duration `yaml:"stableWindow"`
}

// manifestError is a mistake in a manifest: file:line: field: what.
type manifestError struct {
	path  string
	line  int
	field string
	msg   string
}

func (e *manifestError) Error() string {
	loc := e.path
	if e.line > 0 {
		loc += ":" + strconv.Itoa(e.line)
	}
	if e.field == "" {
		return loc + ": " + e.msg
	}
	return loc + ": " + e.field + ": " + e.msg
}

// readManifest reads and checks a manifest file.
func readManifest(path string) (*Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("manifest %s does not exist: `surge init NAME` makes a function with one", path)
		}
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	return parseManifest(path, b)
}

// parseManifest decodes a manifest's text, checking every field against
// the schema, and checks each function against the API's rules.
func parseManifest(path string, b []byte) (*Manifest, error) {
	m := &Manifest{path: path, lines: map[string]int{}}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		line := 0
		if l, rest, ok := strings.Cut(msg, ": "); ok && strings.HasPrefix(l, "line ") {
			line, _ = strconv.Atoi(strings.TrimPrefix(l, "line "))
			msg = rest
		}
		return nil, &manifestError{path: path, line: line, msg: "not YAML: " + msg}
	}
	if len(doc.Content) == 0 {
		return nil, &manifestError{path: path, msg: "is empty: list the functions under \"functions:\""}
	}
	if err := m.decode(doc.Content[0], reflect.ValueOf(m).Elem(), ""); err != nil {
		return nil, err
	}
	if len(m.Functions) == 0 {
		return nil, &manifestError{path: path, line: m.lines["functions"], field: "functions", msg: "lists no function"}
	}
	names := map[string]bool{}
	for i, f := range m.Functions {
		p := fmt.Sprintf("functions[%d]", i)
		n := 0
		for _, s := range []string{f.Build, f.Image, f.Archive} {
			if s != "" {
				n++
			}
		}
		if n != 1 {
			return nil, m.errorAt(p, "give exactly one of build (a Go source folder), image or archive")
		}
		if names[f.Name] {
			return nil, m.errorAt(p+".name", fmt.Sprintf("%q is listed twice", f.Name))
		}
		names[f.Name] = true
		fn := m.function(i, "", api.DefaultNamespace)
		api.SetDefaults(&fn.Spec)
		if err := api.ValidateFunction(fn); err != nil {
			var fe api.FieldErrors
			errors.As(err, &fe)
			return nil, m.fieldError(i, fe[0])
		}
	}
	return m, nil
}

// errorAt is a mistake at field, on the line of the field or of its
// nearest ancestor in the file.
func (m *Manifest) errorAt(field, msg string) error {
	line := 0
	for p := field; p != ""; p = parentPath(p) {
		if l, ok := m.lines[p]; ok {
			line = l
			break
		}
	}
	return &manifestError{path: m.path, line: line, field: field, msg: msg}
}

// parentPath is "functions[0]" for "functions[0].port", "functions" for
// "functions[0]", and "" at the top.
func parentPath(p string) string {
	if strings.HasSuffix(p, "]") {
		return p[:strings.LastIndexByte(p, '[')]
	}
	if i := strings.LastIndexByte(p, '.'); i >= 0 {
		return p[:i]
	}
	return ""
}

// fieldError turns an API field error of function i into the manifest's
// field and line.
func (m *Manifest) fieldError(i int, fe api.FieldError) error {
	p := fmt.Sprintf("functions[%d]", i)
	field := fe.Field
	switch {
	case field == "metadata.name":
		field = p + ".name"
	case strings.HasPrefix(field, "metadata.labels"):
		field = p + ".labels"
	case strings.HasPrefix(field, "spec.nodeSelector"):
		field = p + ".nodeSelector"
	case strings.HasPrefix(field, "spec.env["):
		// The manifest's env is a map, sent sorted by name.
		keys := sortedKeys(m.Functions[i].Env)
		idx, _ := strconv.Atoi(field[len("spec.env["):strings.IndexByte(field, ']')])
		field = p + ".env"
		if idx < len(keys) {
			field += "." + keys[idx]
		}
	case strings.HasPrefix(field, "spec."):
		field = p + "." + strings.TrimPrefix(field, "spec.")
	}
	return m.errorAt(field, fe.Message)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// function returns function i as the API object to deploy, with image as
// its image when the manifest has none of its own (a build or archive).
func (m *Manifest) function(i int, image, namespace string) *api.Function {
	f := m.Functions[i]
	if f.Image != "" {
		image = f.Image
	}
	if image == "" {
		image = "registry.invalid/built/at/deploy:latest" // checked, not deployed
	}
	fn := &api.Function{
		Metadata: api.ObjectMeta{Name: f.Name, Namespace: namespace, Labels: f.Labels},
		Spec: api.FunctionSpec{
			Image: image, Command: f.Command, Args: f.Args, Port: f.Port,
			Resources:        api.Resources{CPU: f.Resources.CPU, Memory: f.Resources.Memory},
			Concurrency:      f.Concurrency,
			Timeout:          api.Duration{Duration: f.Timeout},
			ImagePullSecrets: f.ImagePullSecrets,
			NodeSelector:     f.NodeSelector,
			KeepRevisions:    f.KeepRevisions,
			HTTPSRedirect:    f.HTTPSRedirect,
			Scaling: api.ScalingPolicy{
				MinScale: f.Scaling.MinScale, MaxScale: f.Scaling.MaxScale, Metric: f.Scaling.Metric, Target: f.Scaling.Target,
				ScaleToZeroGrace: api.Duration{Duration: f.Scaling.ScaleToZeroGrace},
				StableWindow:     api.Duration{Duration: f.Scaling.StableWindow},
			},
		},
	}
	for _, k := range sortedKeys(f.Env) {
		fn.Spec.Env = append(fn.Spec.Env, api.EnvVar{Name: k, Value: f.Env[k]})
	}
	if f.Readiness != nil {
		fn.Spec.Readiness = &api.Probe{Path: f.Readiness.Path, Period: api.Duration{Duration: f.Readiness.Period}}
	}
	if c := f.Canary; c != nil {
		fn.Spec.Canary = &api.CanaryStrategy{Steps: c.Steps, StepDuration: api.Duration{Duration: c.StepDuration},
			MaxErrorRateIncrease: c.MaxErrorRateIncrease, MaxLatencyRatio: c.MaxLatencyRatio,
			MinLatencyIncrease: api.Duration{Duration: c.MinLatencyIncrease}, MinRequests: int64(c.MinRequests)}
	}
	return fn
}

// dir is the folder the manifest's relative paths start from.
func (m *Manifest) dir() string { return filepath.Dir(m.path) }

// resolve makes a path of the manifest relative to where surge runs.
func (m *Manifest) resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(m.dir(), p)
}

var durationType = reflect.TypeFor[time.Duration]()

// decode fills v from n, checking n against v's type: the schema. path is
// the field path of n, for errors; every field's line is recorded.
func (m *Manifest) decode(n *yaml.Node, v reflect.Value, path string) error {
	if path != "" {
		m.lines[path] = n.Line
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	bad := func(want string) error {
		got := n.Value
		switch n.Kind {
		case yaml.MappingNode:
			got = "a mapping"
		case yaml.SequenceNode:
			got = "a list"
		default:
			got = strconv.Quote(got)
		}
		return &manifestError{path: m.path, line: n.Line, field: path, msg: "want " + want + ", got " + got}
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // left out
	}
	switch {
	case v.Type() == durationType:
		if n.Kind != yaml.ScalarNode {
			return bad("a duration like \"30s\"")
		}
		d, err := time.ParseDuration(n.Value)
		if err != nil {
			return bad("a duration like \"30s\" or \"2m\"")
		}
		v.SetInt(int64(d))
		return nil
	case v.Kind() == reflect.Pointer:
		if n.Kind != yaml.MappingNode {
			return bad("a mapping")
		}
		v.Set(reflect.New(v.Type().Elem()))
		return m.decode(n, v.Elem(), path)
	case v.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return bad("a mapping")
		}
		fields := map[string]int{}
		var known []string
		for i := range v.NumField() {
			if tag := v.Type().Field(i).Tag.Get("yaml"); tag != "" {
				fields[tag] = i
				known = append(known, tag)
			}
		}
		for j := 0; j+1 < len(n.Content); j += 2 {
			k, val := n.Content[j], n.Content[j+1]
			fp := joinPath(path, k.Value)
			i, ok := fields[k.Value]
			if !ok {
				return &manifestError{path: m.path, line: k.Line, field: fp, msg: "unknown field; known: " + strings.Join(known, ", ")}
			}
			if err := m.decode(val, v.Field(i), fp); err != nil {
				return err
			}
			m.lines[fp] = k.Line
		}
		return nil
	case v.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			return bad("a mapping of names to strings")
		}
		out := reflect.MakeMap(v.Type())
		for j := 0; j+1 < len(n.Content); j += 2 {
			k, val := n.Content[j], n.Content[j+1]
			fp := path + "." + k.Value
			if val.Kind != yaml.ScalarNode {
				return &manifestError{path: m.path, line: val.Line, field: fp, msg: "want a string"}
			}
			m.lines[fp] = k.Line
			out.SetMapIndex(reflect.ValueOf(k.Value), reflect.ValueOf(val.Value))
		}
		v.Set(out)
		return nil
	case v.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return bad("a list")
		}
		out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for j, item := range n.Content {
			if err := m.decode(item, out.Index(j), fmt.Sprintf("%s[%d]", path, j)); err != nil {
				return err
			}
		}
		v.Set(out)
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return bad("a " + v.Kind().String())
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(n.Value)
	case reflect.Int32:
		x, err := strconv.ParseInt(n.Value, 10, 32)
		if err != nil {
			return bad("a whole number")
		}
		v.SetInt(x)
	case reflect.Float64:
		x, err := strconv.ParseFloat(n.Value, 64)
		if err != nil {
			return bad("a number")
		}
		v.SetFloat(x)
	case reflect.Bool:
		switch n.Value {
		case "true":
			v.SetBool(true)
		case "false":
			v.SetBool(false)
		default:
			return bad("true or false")
		}
	default:
		return fmt.Errorf("manifest field %s: type %s not handled", path, v.Type())
	}
	return nil
}

func joinPath(parent, field string) string {
	if parent == "" {
		return field
	}
	return parent + "." + field
}
