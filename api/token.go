package api

import "time"

// Token is an API token as the API shows it (GET /v1/tokens): who it is
// for and what it may do, never its secret.
type Token struct {
	// ID is the token's public half: "ID.SECRET" is the whole token.
	ID string `json:"id"`
	// Role is what the token may do: admin, viewer, node (a join token)
	// or gateway.
	Role string `json:"role"`
	// Description says what the token is for.
	Description string `json:"description,omitempty"`
	// Created is when the token was made.
	Created time.Time `json:"created"`
}

// TokenRequest is the body of POST /v1/tokens.
type TokenRequest struct {
	Role        string `json:"role"`
	Description string `json:"description,omitempty"`
}

// NewToken answers POST /v1/tokens: the token made, and its whole secret,
// which no other answer shows.
type NewToken struct {
	Token
	// Secret is the whole token, "ID.SECRET", to send as a bearer token.
	Secret string `json:"token"`
}
