package standin

import (
	"slices"
	"sync"
)

// modelJSON is one item of GET /v1/videos/models (reference 3.5).
type modelJSON struct {
	Model                     string                 `json:"model"`
	Name                      string                 `json:"name"`
	Status                    string                 `json:"status"`
	InputTypes                []string               `json:"input_types"`
	OutputTypes               []string               `json:"output_types"`
	SupportedParams           []string               `json:"supported_params"`
	SupportedParameters       []string               `json:"supported_parameters"`
	SupportedParamsDetail     map[string]paramDetail `json:"supported_params_detail"`
	SupportedParametersDetail map[string]paramDetail `json:"supported_parameters_detail"`
	Providers                 []providerJSON         `json:"providers"`
	// Pricing is a pricingJSON, or Config.ModelPricing's raw JSON.
	Pricing any `json:"pricing"`
}

type paramDetail struct {
	Supported bool     `json:"supported"`
	Values    []any    `json:"values"`
	Providers []string `json:"providers"`
}

type providerJSON struct {
	ID                  string   `json:"id"`
	SupportedParams     []string `json:"supported_params"`
	SupportedParameters []string `json:"supported_parameters"`
}

// pricingJSON: the pricing shape is not documented; this one is the
// stand-in's own.
type pricingJSON struct {
	Currency     string `json:"currency"`
	Unit         string `json:"unit"`
	PerSecondUSD string `json:"per_second_usd"`
}

// paramAliases lists the parameters a params query name stands for.
var paramAliases = map[string][]string{
	"duration_seconds": {"duration", "seconds"},
	"duration":         {"duration", "seconds"},
	"size":             {"size", "resolution"},
}

func (m *modelJSON) supports(param string) bool {
	names, ok := paramAliases[param]
	if !ok {
		names = []string{param}
	}
	return slices.ContainsFunc(names, func(n string) bool { return slices.Contains(m.SupportedParams, n) })
}

// modelCatalog is the static model list, built once.
var modelCatalog = sync.OnceValue(func() []modelJSON {
	type spec struct {
		id, name, provider string
		inputs             []string
		values             map[string][]any
		params             []string
	}
	veo := map[string][]any{
		"duration":     {4, 6, 8},
		"resolution":   {"720p", "1080p"},
		"aspect_ratio": {"16:9", "9:16"},
		"sample_count": {1, 2, 3, 4},
	}
	veoParams := []string{"duration", "resolution", "aspect_ratio", "seed", "sample_count", "negative_prompt",
		"generate_audio", "enhance_prompt", "person_generation", "input_references"}
	specs := []spec{
		{"google/veo-3.1-lite", "Veo 3.1 Lite", "google", []string{"text", "image"}, veo, veoParams},
		{"google/veo-3.1", "Veo 3.1", "google", []string{"text", "image"}, veo, veoParams},
		{"openai/sora-2", "Sora 2", "openai", []string{"text", "image"}, map[string][]any{
			"seconds": {"4", "8", "12"},
			"size":    {"720x1280", "1280x720", "1024x1792", "1792x1024"},
		}, []string{"seconds", "size", "input_reference"}},
	}
	out := make([]modelJSON, 0, len(specs))
	for _, sp := range specs {
		detail := make(map[string]paramDetail, len(sp.params))
		for _, p := range sp.params {
			detail[p] = paramDetail{Supported: true, Values: append([]any{}, sp.values[p]...), Providers: []string{sp.provider}}
		}
		out = append(out, modelJSON{
			Model:                     sp.id,
			Name:                      sp.name,
			Status:                    "active",
			InputTypes:                sp.inputs,
			OutputTypes:               []string{"video"},
			SupportedParams:           sp.params,
			SupportedParameters:       sp.params,
			SupportedParamsDetail:     detail,
			SupportedParametersDetail: detail,
			Providers:                 []providerJSON{{ID: sp.provider, SupportedParams: sp.params, SupportedParameters: sp.params}},
			Pricing:                   pricingJSON{Currency: "usd", Unit: "second", PerSecondUSD: usd(pricePerSecondNanos(sp.id))},
		})
	}
	return out
})
