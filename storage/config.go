package storage

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"strings"
)

// EncryptionConfig is storage.encryption: encryption at rest of recordings
// (audio and metadata sidecar) as NAME.enc + NAME.esk. See the README, "Encryption at rest".
type EncryptionConfig struct {
	// Certificate is a PEM file: an X.509 certificate or a public key, RSA of
	// 2048 bits or more. New recordings are encrypted for it. Default ""
	// (encryption off).
	Certificate string `yaml:"certificate"`
	// PrivateKey is an optional PEM or PKCS#12 (.pfx/.p12) file with the
	// matching private key, so the server can serve recordings decrypted.
	// Default "" (recordings are served encrypted, as stored).
	PrivateKey string `yaml:"private_key"`
	// Password opens PrivateKey when it is encrypted. Default "".
	Password string `yaml:"password"`
}

// Defaults fills unset fields (none have a non-empty default).
func (c *EncryptionConfig) Defaults() {}

// Enabled reports whether recordings are encrypted.
func (c EncryptionConfig) Enabled() bool { return strings.TrimSpace(c.Certificate) != "" }

// Validate checks the fields without reading files; Load reads them.
func (c EncryptionConfig) Validate() error {
	var errs []error
	if c.PrivateKey != "" && c.Certificate == "" {
		errs = append(errs, errors.New("storage.encryption.private_key: set without storage.encryption.certificate"))
	}
	if c.Password != "" && c.PrivateKey == "" {
		errs = append(errs, errors.New("storage.encryption.password: set without storage.encryption.private_key"))
	}
	return errors.Join(errs...)
}

// Load reads the certificate (nil Recipient when encryption is off) and the
// private key if configured, and checks that they match. Errors name the
// config key and the file.
func (c EncryptionConfig) Load() (*Recipient, *rsa.PrivateKey, error) {
	if !c.Enabled() {
		return nil, nil, nil
	}
	rcpt, err := LoadRecipient(c.Certificate)
	if err != nil {
		return nil, nil, fmt.Errorf("storage.encryption.certificate: %w", err)
	}
	if c.PrivateKey == "" {
		return rcpt, nil, nil
	}
	priv, err := LoadPrivateKey(c.PrivateKey, c.Password)
	if err != nil {
		return nil, nil, fmt.Errorf("storage.encryption.private_key %s: %w", c.PrivateKey, err)
	}
	fp, err := KeyFingerprint(&priv.PublicKey)
	if err != nil {
		return nil, nil, fmt.Errorf("storage.encryption.private_key %s: %w", c.PrivateKey, err)
	}
	if fp != rcpt.KeySHA256 {
		return nil, nil, fmt.Errorf("storage.encryption.private_key %s: %w: it is not the key of storage.encryption.certificate (key sha256 %.16s…, certificate key sha256 %.16s…)", c.PrivateKey, ErrWrongKey, fp, rcpt.KeySHA256)
	}
	return rcpt, priv, nil
}
