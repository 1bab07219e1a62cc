package storage

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"os"
	"unicode/utf16"

	"golang.org/x/crypto/pkcs12"
)

// minRSABits is the smallest RSA key accepted for encryption at rest.
const minRSABits = 2048

// Recipient is the public key recordings are encrypted for, with the
// fingerprints written into each .esk.
type Recipient struct {
	Key *rsa.PublicKey
	// KeySHA256: hex SHA-256 of the SubjectPublicKeyInfo DER.
	KeySHA256 string
	// CertSHA256: hex SHA-256 of the certificate DER ("" for a bare key).
	CertSHA256 string
	// Subject of the certificate, for humans ("" for a bare key).
	Subject string
}

// KeyFingerprint returns the hex SHA-256 of pub's SubjectPublicKeyInfo DER
// (what `openssl pkey -pubin -outform DER | sha256sum` prints).
func KeyFingerprint(pub *rsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// LoadRecipient reads a PEM certificate or public key (the first usable
// block) from path.
func LoadRecipient(path string) (*Recipient, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeyFile, err)
	}
	r, err := ParseRecipient(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// ParseRecipient parses a PEM "CERTIFICATE", "PUBLIC KEY" (PKIX) or "RSA
// PUBLIC KEY" (PKCS#1). The key must be RSA of at least 2048 bits.
func ParseRecipient(b []byte) (*Recipient, error) {
	rest := b
	var seen []string
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		seen = append(seen, blk.Type)
		r := &Recipient{}
		var pub any
		switch blk.Type {
		case "CERTIFICATE":
			cert, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%w: certificate: %v", ErrKeyFile, err)
			}
			sum := sha256.Sum256(cert.Raw)
			r.CertSHA256, r.Subject, pub = hex.EncodeToString(sum[:]), cert.Subject.String(), cert.PublicKey
		case "PUBLIC KEY":
			k, err := x509.ParsePKIXPublicKey(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%w: public key: %v", ErrKeyFile, err)
			}
			pub = k
		case "RSA PUBLIC KEY":
			k, err := x509.ParsePKCS1PublicKey(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%w: RSA public key: %v", ErrKeyFile, err)
			}
			pub = k
		default:
			continue
		}
		rk, err := checkRSA(pub)
		if err != nil {
			return nil, err
		}
		r.Key = rk
		if r.KeySHA256, err = KeyFingerprint(rk); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrKeyFile, err)
		}
		return r, nil
	}
	if len(seen) > 0 {
		return nil, fmt.Errorf("%w: no CERTIFICATE or PUBLIC KEY block (found %v); a private key is not a certificate", ErrKeyFile, seen)
	}
	return nil, fmt.Errorf("%w: not PEM (expected -----BEGIN CERTIFICATE----- or -----BEGIN PUBLIC KEY-----)", ErrKeyFile)
}

func checkRSA(pub any) (*rsa.PublicKey, error) {
	rk, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: key type %T is not RSA (RSA %d+ bits required)", ErrKeyFile, pub, minRSABits)
	}
	if bits := rk.N.BitLen(); bits < minRSABits {
		return nil, fmt.Errorf("%w: RSA key of %d bits is too short (RSA %d+ bits required)", ErrKeyFile, bits, minRSABits)
	}
	return rk, nil
}

// LoadPrivateKey reads an RSA private key: PEM (PKCS#1, PKCS#8, encrypted
// PKCS#8 or legacy encrypted PEM, with password) or PKCS#12 (.pfx/.p12,
// with password, possibly empty).
func LoadPrivateKey(path, password string) (*rsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeyFile, err)
	}
	return ParsePrivateKey(b, password)
}

// ParsePrivateKey parses PEM or PKCS#12 (DER) bytes, sniffing which.
func ParsePrivateKey(b []byte, password string) (*rsa.PrivateKey, error) {
	if bytes.Contains(b, []byte("-----BEGIN ")) {
		return parsePrivatePEM(b, password)
	}
	return ParsePKCS12(b, password)
}

func parsePrivatePEM(b []byte, password string) (*rsa.PrivateKey, error) {
	rest := b
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return nil, fmt.Errorf("%w: no PRIVATE KEY block in the PEM file", ErrKeyFile)
		}
		switch blk.Type {
		case "RSA PRIVATE KEY", "PRIVATE KEY":
			der := blk.Bytes
			//lint:ignore SA1019 legacy OpenSSL encrypted PEM is still what admins have.
			if x509.IsEncryptedPEMBlock(blk) { //nolint:staticcheck
				if password == "" {
					return nil, fmt.Errorf("%w: the private key is encrypted: give --password", ErrWrongPassword)
				}
				var err error
				der, err = x509.DecryptPEMBlock(blk, []byte(password)) //nolint:staticcheck
				if err != nil {
					return nil, ErrWrongPassword
				}
				k, err := parseKeyDER(der)
				if err != nil {
					return nil, ErrWrongPassword // garbage from a wrong password
				}
				return k, nil
			}
			return parseKeyDER(der)
		case "ENCRYPTED PRIVATE KEY":
			if password == "" {
				return nil, fmt.Errorf("%w: the private key is encrypted: give --password", ErrWrongPassword)
			}
			var epki encryptedPrivateKeyInfo
			if _, err := asn1.Unmarshal(blk.Bytes, &epki); err != nil {
				return nil, fmt.Errorf("%w: encrypted private key: %v", ErrKeyFile, err)
			}
			der, err := pbes2Decrypt(epki.Algo, epki.Data, []byte(password))
			if err != nil {
				return nil, err
			}
			k, err := parseKeyDER(der)
			if err != nil {
				return nil, ErrWrongPassword
			}
			return k, nil
		}
	}
}

func parseKeyDER(der []byte) (*rsa.PrivateKey, error) {
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: private key: %v", ErrKeyFile, err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: private key type %T is not RSA", ErrKeyFile, k)
	}
	return rk, nil
}

// PKCS#12 (RFC 7292) and PKCS#5 PBES2 (RFC 8018), as far as reading an RSA
// key needs: OpenSSL 3's default PFX (PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC,
// HMAC-SHA256 MAC) is read here; legacy PFX (3DES/RC2, SHA-1 MAC) goes
// through golang.org/x/crypto/pkcs12.

var (
	oidData               = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidEncryptedData      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 6}
	oidKeyBag             = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 1}
	oidShroudedKeyBag     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 2}
	oidPBES2              = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2             = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidHMACSHA1           = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}
	oidHMACSHA256         = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidHMACSHA384         = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 10}
	oidHMACSHA512         = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 11}
	oidAES128CBC          = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC          = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC          = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidDESEDE3CBC         = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}
	oidSHA1               = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256             = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384             = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512             = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
	errLegacyPKCS12       = errors.New("legacy PKCS#12 algorithm")
	maxPBEIterations      = 10_000_000
	errPBEIterationsLimit = fmt.Errorf("%w: more than %d key derivation iterations", ErrKeyFile, maxPBEIterations)
)

type pfxPDU struct {
	Version  int
	AuthSafe contentInfo
	MacData  macData `asn1:"optional"`
}

type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"tag:0,explicit,optional"`
}

type macData struct {
	Mac        digestInfo
	MacSalt    []byte
	Iterations int `asn1:"optional,default:1"`
}

type digestInfo struct {
	Algorithm pkix.AlgorithmIdentifier
	Digest    []byte
}

type encryptedData struct {
	Version              int
	EncryptedContentInfo encryptedContentInfo
}

type encryptedContentInfo struct {
	ContentType                asn1.ObjectIdentifier
	ContentEncryptionAlgorithm pkix.AlgorithmIdentifier
	EncryptedContent           []byte `asn1:"tag:0,optional"`
}

type safeBag struct {
	ID         asn1.ObjectIdentifier
	Value      asn1.RawValue   `asn1:"tag:0,explicit"`
	Attributes []asn1.RawValue `asn1:"set,optional"`
}

type encryptedPrivateKeyInfo struct {
	Algo pkix.AlgorithmIdentifier
	Data []byte
}

type pbes2Params struct {
	KDF pkix.AlgorithmIdentifier
	Enc pkix.AlgorithmIdentifier
}

type pbkdf2Params struct {
	Salt       []byte
	Iterations int
	KeyLength  int                      `asn1:"optional"`
	PRF        pkix.AlgorithmIdentifier `asn1:"optional"`
}

// ParsePKCS12 returns the RSA private key of a PFX file.
func ParsePKCS12(b []byte, password string) (*rsa.PrivateKey, error) {
	k, err := parsePFX(b, password)
	if errors.Is(err, errLegacyPKCS12) {
		return parseLegacyPFX(b, password)
	}
	return k, err
}

func parseLegacyPFX(b []byte, password string) (*rsa.PrivateKey, error) {
	blocks, err := pkcs12.ToPEM(b, password)
	if err != nil {
		if errors.Is(err, pkcs12.ErrIncorrectPassword) || errors.Is(err, pkcs12.ErrDecryption) {
			return nil, ErrWrongPassword
		}
		return nil, fmt.Errorf("%w: PKCS#12: %v", ErrKeyFile, err)
	}
	for _, blk := range blocks {
		if blk.Type == "PRIVATE KEY" || blk.Type == "RSA PRIVATE KEY" {
			return parseKeyDER(blk.Bytes)
		}
	}
	return nil, fmt.Errorf("%w: PKCS#12 file holds no private key", ErrKeyFile)
}

func parsePFX(b []byte, password string) (*rsa.PrivateKey, error) {
	var pfx pfxPDU
	if rest, err := asn1.Unmarshal(b, &pfx); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("%w: neither PEM nor PKCS#12 (.pfx/.p12)", ErrKeyFile)
	}
	if pfx.Version != 3 || !pfx.AuthSafe.ContentType.Equal(oidData) {
		return nil, fmt.Errorf("%w: unsupported PKCS#12 (version %d, public-key integrity mode)", ErrKeyFile, pfx.Version)
	}
	var authSafe []byte
	if _, err := asn1.Unmarshal(pfx.AuthSafe.Content.Bytes, &authSafe); err != nil {
		return nil, fmt.Errorf("%w: PKCS#12: %v", ErrKeyFile, err)
	}
	if len(pfx.MacData.Mac.Algorithm.Algorithm) > 0 {
		if err := verifyPFXMac(pfx.MacData, authSafe, password); err != nil {
			return nil, err
		}
	}
	var cis []contentInfo
	if _, err := asn1.Unmarshal(authSafe, &cis); err != nil {
		return nil, fmt.Errorf("%w: PKCS#12: %v", ErrKeyFile, err)
	}
	for _, ci := range cis {
		var data []byte
		switch {
		case ci.ContentType.Equal(oidData):
			if _, err := asn1.Unmarshal(ci.Content.Bytes, &data); err != nil {
				return nil, fmt.Errorf("%w: PKCS#12: %v", ErrKeyFile, err)
			}
		case ci.ContentType.Equal(oidEncryptedData):
			var ed encryptedData
			if _, err := asn1.Unmarshal(ci.Content.Bytes, &ed); err != nil {
				return nil, fmt.Errorf("%w: PKCS#12: %v", ErrKeyFile, err)
			}
			alg := ed.EncryptedContentInfo.ContentEncryptionAlgorithm
			if !alg.Algorithm.Equal(oidPBES2) {
				continue // legacy-encrypted certificates: not needed
			}
			var err error
			if data, err = pbes2Decrypt(alg, ed.EncryptedContentInfo.EncryptedContent, []byte(password)); err != nil {
				return nil, err
			}
		default:
			continue
		}
		var bags []safeBag
		if _, err := asn1.Unmarshal(data, &bags); err != nil {
			return nil, fmt.Errorf("%w: PKCS#12 bags: %v", ErrKeyFile, err)
		}
		for _, bag := range bags {
			switch {
			case bag.ID.Equal(oidKeyBag):
				return parseKeyDER(bag.Value.Bytes)
			case bag.ID.Equal(oidShroudedKeyBag):
				var epki encryptedPrivateKeyInfo
				if _, err := asn1.Unmarshal(bag.Value.Bytes, &epki); err != nil {
					return nil, fmt.Errorf("%w: PKCS#12 key bag: %v", ErrKeyFile, err)
				}
				if !epki.Algo.Algorithm.Equal(oidPBES2) {
					return nil, errLegacyPKCS12
				}
				der, err := pbes2Decrypt(epki.Algo, epki.Data, []byte(password))
				if err != nil {
					return nil, err
				}
				k, err := parseKeyDER(der)
				if err != nil {
					return nil, ErrWrongPassword
				}
				return k, nil
			}
		}
	}
	return nil, errLegacyPKCS12 // no key readable here: let the legacy reader try
}

func hashFor(oid asn1.ObjectIdentifier) (func() hash.Hash, int, bool) {
	switch {
	case oid.Equal(oidSHA1), oid.Equal(oidHMACSHA1):
		return sha1.New, 64, true
	case oid.Equal(oidSHA256), oid.Equal(oidHMACSHA256):
		return sha256.New, 64, true
	case oid.Equal(oidSHA384), oid.Equal(oidHMACSHA384):
		return sha512.New384, 128, true
	case oid.Equal(oidSHA512), oid.Equal(oidHMACSHA512):
		return sha512.New, 128, true
	}
	return nil, 0, false
}

func verifyPFXMac(md macData, content []byte, password string) error {
	h, v, ok := hashFor(md.Mac.Algorithm.Algorithm)
	if !ok {
		return fmt.Errorf("%w: PKCS#12 MAC algorithm %v not supported", ErrKeyFile, md.Mac.Algorithm.Algorithm)
	}
	if md.Iterations > maxPBEIterations {
		return errPBEIterationsLimit
	}
	pw := bmpPassword(password)
	try := [][]byte{pw}
	if password == "" {
		try = append(try, nil) // some writers use an empty byte string
	}
	for _, p := range try {
		key := pkcs12KDF(h, v, 3, p, md.MacSalt, md.Iterations, h().Size())
		mac := hmac.New(h, key)
		mac.Write(content)
		if hmac.Equal(mac.Sum(nil), md.Mac.Digest) {
			return nil
		}
	}
	return ErrWrongPassword
}

// bmpPassword encodes a password as PKCS#12 wants it: UTF-16BE, two zero
// bytes at the end.
func bmpPassword(s string) []byte {
	u := utf16.Encode([]rune(s))
	out := make([]byte, 0, 2*len(u)+2)
	for _, c := range u {
		out = append(out, byte(c>>8), byte(c))
	}
	return append(out, 0, 0)
}

// pkcs12KDF is the key derivation of RFC 7292 appendix B.2 (id 3 = MAC key).
func pkcs12KDF(newHash func() hash.Hash, v int, id byte, pw, salt []byte, iter, n int) []byte {
	fill := func(src []byte) []byte {
		if len(src) == 0 {
			return nil
		}
		out := make([]byte, v*((len(src)+v-1)/v))
		for i := range out {
			out[i] = src[i%len(src)]
		}
		return out
	}
	D := bytes.Repeat([]byte{id}, v)
	I := append(fill(salt), fill(pw)...)
	var out []byte
	for len(out) < n {
		h := newHash()
		h.Write(D)
		h.Write(I)
		A := h.Sum(nil)
		for j := 1; j < iter; j++ {
			h.Reset()
			h.Write(A)
			A = h.Sum(A[:0])
		}
		out = append(out, A...)
		if len(out) >= n {
			break
		}
		B := fill(A)[:v]
		for j := 0; j < len(I); j += v { // I_j = (I_j + B + 1) mod 2^(8v)
			carry := 1
			for k := v - 1; k >= 0; k-- {
				s := int(I[j+k]) + int(B[k]) + carry
				I[j+k], carry = byte(s), s>>8
			}
		}
	}
	return out[:n]
}

// pbes2Decrypt decrypts PBES2 (PBKDF2 + AES-CBC or 3DES-CBC) ciphertext.
// A padding error means a wrong password.
func pbes2Decrypt(alg pkix.AlgorithmIdentifier, ct, password []byte) ([]byte, error) {
	if !alg.Algorithm.Equal(oidPBES2) {
		return nil, fmt.Errorf("%w: encryption %v not supported (PBES2 expected)", ErrKeyFile, alg.Algorithm)
	}
	var p pbes2Params
	if _, err := asn1.Unmarshal(alg.Parameters.FullBytes, &p); err != nil {
		return nil, fmt.Errorf("%w: PBES2 parameters: %v", ErrKeyFile, err)
	}
	if !p.KDF.Algorithm.Equal(oidPBKDF2) {
		return nil, fmt.Errorf("%w: key derivation %v not supported (PBKDF2 expected)", ErrKeyFile, p.KDF.Algorithm)
	}
	var kp pbkdf2Params
	if _, err := asn1.Unmarshal(p.KDF.Parameters.FullBytes, &kp); err != nil {
		return nil, fmt.Errorf("%w: PBKDF2 parameters: %v", ErrKeyFile, err)
	}
	if kp.Iterations <= 0 || kp.Iterations > maxPBEIterations {
		return nil, errPBEIterationsLimit
	}
	prf, _, ok := sha1.New, 0, true
	if len(kp.PRF.Algorithm) > 0 {
		if prf, _, ok = hashFor(kp.PRF.Algorithm); !ok {
			return nil, fmt.Errorf("%w: PBKDF2 PRF %v not supported", ErrKeyFile, kp.PRF.Algorithm)
		}
	}
	var keyLen int
	var newBlock func([]byte) (cipher.Block, error)
	switch {
	case p.Enc.Algorithm.Equal(oidAES128CBC):
		keyLen, newBlock = 16, aes.NewCipher
	case p.Enc.Algorithm.Equal(oidAES192CBC):
		keyLen, newBlock = 24, aes.NewCipher
	case p.Enc.Algorithm.Equal(oidAES256CBC):
		keyLen, newBlock = 32, aes.NewCipher
	case p.Enc.Algorithm.Equal(oidDESEDE3CBC):
		keyLen, newBlock = 24, des.NewTripleDESCipher
	default:
		return nil, fmt.Errorf("%w: cipher %v not supported", ErrKeyFile, p.Enc.Algorithm)
	}
	var iv []byte
	if _, err := asn1.Unmarshal(p.Enc.Parameters.FullBytes, &iv); err != nil {
		return nil, fmt.Errorf("%w: cipher IV: %v", ErrKeyFile, err)
	}
	key, err := pbkdf2.Key(prf, string(password), kp.Salt, kp.Iterations, keyLen)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeyFile, err)
	}
	blk, err := newBlock(key)
	if err != nil {
		return nil, err
	}
	bs := blk.BlockSize()
	if len(iv) != bs || len(ct) == 0 || len(ct)%bs != 0 {
		return nil, fmt.Errorf("%w: malformed encrypted key", ErrKeyFile)
	}
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(blk, iv).CryptBlocks(pt, ct)
	pad := int(pt[len(pt)-1])
	if pad == 0 || pad > bs {
		return nil, ErrWrongPassword
	}
	for _, c := range pt[len(pt)-pad:] {
		if int(c) != pad {
			return nil, ErrWrongPassword
		}
	}
	return pt[:len(pt)-pad], nil
}
