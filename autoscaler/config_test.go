package autoscaler

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestDefaultConfigIsValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v, want nil", err)
	}
}

func TestConfigValidateReportsEveryBadField(t *testing.T) {
	c := DefaultConfig()
	c.SamplePeriod = 0
	c.PanicWindowPercentage = 0
	c.PanicThreshold = 1
	c.MaxScaleUpRate = math.NaN()
	c.MaxScaleDownRate = 0.5
	c.TargetUtilization = 1.5
	c.UnlimitedConcurrencyTarget = -1
	c.RPSTarget = 0
	c.CPUTarget = math.Inf(1)
	c.ColdStartCost = -time.Second
	c.ReactionTime = -time.Second
	c.ScaleToZeroGrace = -time.Second
	c.KeepAlive.BucketWidth = 0
	c.KeepAlive.HeadPercentile = 100
	c.KeepAlive.TailPercentile = 101
	c.KeepAlive.Margin = 1
	c.KeepAlive.MinSamples = 0
	c.KeepAlive.MaxCV = -1
	c.KeepAlive.MaxOutOfBounds = 2
	c.KeepAlive.Fixed = -time.Minute

	err := c.Validate()
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Validate() = %v, want an error wrapping ErrInvalidConfig", err)
	}
	for _, field := range []string{
		"SamplePeriod", "PanicWindowPercentage", "PanicThreshold",
		"MaxScaleUpRate", "MaxScaleDownRate", "TargetUtilization",
		"UnlimitedConcurrencyTarget", "RPSTarget", "CPUTarget", "ColdStartCost",
		"ReactionTime", "ScaleToZeroGrace", "KeepAlive.BucketWidth",
		"KeepAlive.HeadPercentile", "KeepAlive.TailPercentile", "KeepAlive.Margin",
		"KeepAlive.MinSamples", "KeepAlive.MaxCV", "KeepAlive.MaxOutOfBounds",
		"KeepAlive.Fixed",
	} {
		if !strings.Contains(err.Error(), field+" = ") {
			t.Errorf("Validate() error does not name %s:\n%v", field, err)
		}
	}
}

func TestConfigValidateRelations(t *testing.T) {
	c := DefaultConfig()
	c.StableWindow = c.SamplePeriod / 2
	c.KeepAlive.Range = c.KeepAlive.BucketWidth / 2
	c.KeepAlive.HeadPercentile, c.KeepAlive.TailPercentile = 50, 40
	err := c.Validate()
	for _, field := range []string{"StableWindow", "KeepAlive.Range", "KeepAlive.TailPercentile"} {
		if !strings.Contains(err.Error(), field+" = ") {
			t.Errorf("Validate() error does not name %s:\n%v", field, err)
		}
	}
}

func TestPolicyValidate(t *testing.T) {
	tests := []struct {
		name   string
		p      Policy
		fields []string // named in the error; none means valid
	}{
		{name: "zero value", p: Policy{}},
		{name: "full", p: Policy{MinReplicas: 1, MaxReplicas: 10, ContainerConcurrency: 4,
			Targets:      []Target{{Metric: MetricConcurrency}, {Metric: MetricRPS, Value: 50}, {Metric: MetricCPU, Value: 0.5}},
			StableWindow: time.Minute, ScaleToZeroGrace: time.Second, KeepAlive: KeepAliveAdaptive}},
		{name: "negative bounds", p: Policy{MinReplicas: -1, MaxReplicas: -1}, fields: []string{"MinReplicas", "MaxReplicas"}},
		{name: "min above max", p: Policy{MinReplicas: 3, MaxReplicas: 2}, fields: []string{"MinReplicas"}},
		{name: "bad targets", p: Policy{Targets: []Target{{Metric: "memory"}, {Metric: MetricRPS, Value: -1}, {Metric: MetricRPS}}},
			fields: []string{"Targets[0].Metric", "Targets[1].Value", "Targets[2].Metric"}},
		{name: "bad durations and mode", p: Policy{ContainerConcurrency: -1, StableWindow: -1, ScaleToZeroGrace: -1, KeepAlive: 7},
			fields: []string{"ContainerConcurrency", "StableWindow", "ScaleToZeroGrace", "KeepAlive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if len(tt.fields) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate() = %v, want an error wrapping ErrInvalidConfig", err)
			}
			for _, f := range tt.fields {
				if !strings.Contains(err.Error(), f+" = ") {
					t.Errorf("Validate() error does not name %s:\n%v", f, err)
				}
			}
		})
	}
}

func TestNewDeciderRejectsBadInput(t *testing.T) {
	bad := DefaultConfig()
	bad.StableWindow = 0
	if _, err := NewDecider(bad, Policy{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("NewDecider(bad config) = %v, want ErrInvalidConfig", err)
	}
	if _, err := NewDecider(DefaultConfig(), Policy{MinReplicas: -1}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("NewDecider(bad policy) = %v, want ErrInvalidConfig", err)
	}
	d, err := NewDecider(DefaultConfig(), Policy{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.SetPolicy(Policy{StableWindow: time.Millisecond}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("SetPolicy(window below the sample period) = %v, want ErrInvalidConfig", err)
	}
}

func TestStrings(t *testing.T) {
	for want, s := range map[string]interface{ String() string }{
		"stable": ReasonStable, "panic": ReasonPanic, "to-zero": ReasonToZero,
		"keep-alive": ReasonKeepAlive, "pre-warm": ReasonPrewarm, "rate-limit": ReasonRateLimit,
		"bound": ReasonBound, "initial scale": ReasonInitialScale, "rolling out": ReasonRollingOut,
		"not ready": ReasonNotReady, "no traffic": ReasonNoTraffic, "Reason(99)": Reason(99),
		"fixed": KeepAliveFixed, "adaptive": KeepAliveAdaptive, "default": KeepAliveDefault,
		"release": PredictRelease, "PredictionKind(9)": PredictionKind(9),
	} {
		if got := s.String(); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	}
}
