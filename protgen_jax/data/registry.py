"""Named datasets: where their files are found, and how each file is obtained where it is missing.

`resolve(name, filename)` looks for a dataset file in this order and returns the first hit:

1. `$PROTGEN_DATA_DIR/<name>/`;
2. `shared/data/<name>/` in the current working directory or any of its parents, then in the folder of
   this package or any of its parents (a checkout lives beside `shared/`, i.e. `<repo>/../shared/data`);
3. the user cache `$PROTGEN_CACHE_DIR/<name>/`, else `$XDG_CACHE_HOME/protgen_jax/<name>/`, else
   `~/.cache/protgen_jax/<name>/`;
4. otherwise the file is obtained into that cache, the way its source (`source_of`) says:

   - `RemoteFile` (the table `UPSTREAM`): a byte-identical upstream copy, downloaded and checked
     against its sha256;
   - `BuiltFile`: built from another file of the dataset by a fixed step and checked against the sha256
     of the shared copy (the BLAT_ECOLX wild type, the first record of the alignment);
   - `PdbChains`: a folder of single chains, each cut from its structure file fetched by id (the PDB
     archive at `pdb_url()`, `$PROTGEN_PDB_URL` to change it) and checked against its recorded residue
     count and sequence digest (no checksums exist for these files; a chain that differs is left out and
     reported), with `ChainManifest` (manifest.csv) written from the chains;
   - `ArchiveBuild`: converted from a downloaded archive (sha256-checked) and checked against the sha256
     of the shared copy (for a folder: of its `sha256sum` listing);
   - `Rebuild`: made by a processing step from upstream data that cannot be downloaded as-is; a
     `DataError` names the upstream sources and the steps.

Downloads stream into a temporary file in the cache folder and are moved into place with `os.replace`
only when they check out; on a mismatch or a network error nothing is left behind. A host that cannot be
reached gives one line: `cannot reach HOST: reason; download URL by hand and place it in DIR ...`.
`protgen data list` shows what is present and how the rest is obtained, `protgen data fetch NAME`
obtains it. Standard library only (no JAX; biotite checks fetched PDB chains).
"""

import csv
import hashlib
import http.client
import io
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from protgen_jax.errors import DataError

__all__ = [
    "DATASETS",
    "PDB_URL",
    "SOURCES",
    "UPSTREAM",
    "ArchiveBuild",
    "BuiltFile",
    "ChainManifest",
    "ChainRecord",
    "Dataset",
    "FileStatus",
    "PdbChains",
    "Rebuild",
    "RemoteFile",
    "cache_dir",
    "fetch",
    "file_status",
    "list_datasets",
    "pdb_url",
    "resolve",
    "search_path",
    "sha256_of",
    "source_of",
]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_TIMEOUT = 60
_WORKERS = 8  # parallel PDB entry downloads


@dataclass(frozen=True)
class Dataset:
    """A named dataset: a folder holding `files` (plain files, or sub-folders such as "pdb")."""

    name: str
    description: str
    files: tuple[str, ...]
    upstream: str = ""  # where the data come from, and their licence


DATASETS: dict[str, Dataset] = {
    "blat_ecolx": Dataset(
        "blat_ecolx",
        "TEM-1 beta-lactamase family alignment (8,403 sequences) + Stiffler 2015 DMS (4,997 mutants)",
        ("BLAT_ECOLX.a2m", "BLAT_ECOLX_Stiffler2015_dms.csv", "BLAT_ECOLX_wt.fasta"),
        "alignment: Hsu et al. 2022 (chloechsu/combining-evolutionary-and-assay-labelled-data, MIT); "
        "DMS: Stiffler et al. 2015 via debbiemarkslab/DeepSequence (MIT); focus UniProt P62593 24-286",
    ),
    "structures": Dataset(
        "structures",
        "263 single protein chains (PDB files, 40-256 residues) + manifest.csv",
        ("pdb", "manifest.csv"),
        "wwPDB entries (CC0), chains of protein-stability benchmark sets (PROSTATA, S2648, S669, "
        "Varibench) and Kortemme-Lab ddg / covariation (MIT), one per cluster of similar sequences",
    ),
    "structures_cgdms": Dataset(
        "structures_cgdms",
        "2,202 single-chain N/CA/C backbones (20-100 residues) + manifest.csv (split, sequence, "
        "3-state secondary structure)",
        ("pdb", "manifest.csv"),
        "train/val chains of Greener & Jones 2021 as shipped in the cgdms 1.0 package (MIT); "
        "coordinates from wwPDB entries (CC0)",
    ),
    "sequences": Dataset(
        "sequences",
        "91,281 unaligned domain sequences (40 families) + UniRef50 amino-acid composition",
        ("family_domains_train.fasta", "uniref50_aa_composition.csv"),
        "Pfam alignments of Kortemme-Lab/covariation (MIT), WW / Kunitz of jertubiana/PGM (BSD-3), "
        "BLAT_ECOLX and SCN5A alignment rows (MIT); composition: microsoft/evodiff (MIT)",
    ),
}
"""The known datasets, by name. Tests may add entries (e.g. with pytest's monkeypatch.setitem)."""


# ---------------------------------------------------------------------------------------------------
# How files are obtained


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


@dataclass(frozen=True)
class RemoteFile:
    """An upstream copy of a dataset file, byte-identical to the shared one."""

    url: str
    sha256: str

    def how(self) -> str:
        return f"download from {_host(self.url)}, sha256-checked"


@dataclass(frozen=True)
class BuiltFile:
    """A file built from another file of the same dataset by `build` (bytes -> bytes), sha256-checked."""

    source: str
    build: Callable[[bytes], bytes]
    sha256: str
    step: str  # what `build` does, in words

    def how(self) -> str:
        return f"built from {self.source} ({self.step}), sha256-checked"


@dataclass(frozen=True)
class ChainRecord:
    """One chain of a `PdbChains` folder: file `<name>.pdb`, with what a correct copy must hold."""

    name: str  # <PDBID>_<chain id>
    n_res: int  # residues with a CA atom
    seq_sha: str  # the first 8 hex digits of sha256(one-letter sequence of those residues)
    url: str = ""  # the structure file to cut it from; "" = entry <PDBID> of the PDB archive

    @property
    def entry(self) -> str:
        return self.name.rsplit("_", 1)[0]

    @property
    def chain_id(self) -> str:
        return self.name.rsplit("_", 1)[1]

    def source_url(self) -> str:
        return self.url or f"{pdb_url()}/{self.entry}.pdb"


@dataclass(frozen=True)
class PdbChains:
    """A folder of single chains, each cut from its structure file, fetched by id (`ChainRecord`)."""

    chains: tuple[ChainRecord, ...]
    note: str = ""

    def how(self) -> str:
        return (
            f"{len(self.chains)} chains cut from PDB entries fetched by id from {_host(pdb_url())}"
            f"{self.note}, each checked against its recorded length and sequence"
        )


@dataclass(frozen=True)
class ChainManifest:
    """A manifest (name, source, chain, n_res, chain_breaks, seq) written from the chain folder `folder`
    of the same dataset; the `source` column names where each chain was cut from."""

    folder: str = "pdb"

    def how(self) -> str:
        return f"written from the chains in {self.folder}/"


@dataclass(frozen=True)
class ArchiveBuild:
    """A file or folder converted from a downloaded archive (`build(zip, target)`), sha256-checked.

    `sha256` is the file's, or for a folder the sha256 of its `sha256sum`-style listing
    (`<sha256>  <file name>` lines sorted by name)."""

    archive: RemoteFile
    build: Callable[[zipfile.ZipFile, Path], None]
    sha256: str
    step: str

    def how(self) -> str:
        return f"{self.step} ({_host(self.archive.url)}), sha256-checked"


@dataclass(frozen=True)
class Rebuild:
    """A file made by a processing step from upstream data that cannot be downloaded as-is."""

    upstream: str
    steps: str

    def how(self) -> str:
        return "not downloadable as-is (the fetch error says how to rebuild it)"


Source = RemoteFile | BuiltFile | PdbChains | ChainManifest | ArchiveBuild | Rebuild

PDB_URL = "https://files.rcsb.org/download"
"""The PDB archive's download folder (`<PDB_URL>/<ID>.pdb`, `.cif`); `$PROTGEN_PDB_URL` overrides it."""


def pdb_url() -> str:
    """Where PDB entries are downloaded from: `$PROTGEN_PDB_URL`, else `PDB_URL`."""
    return (os.environ.get("PROTGEN_PDB_URL") or PDB_URL).rstrip("/")


# ---------------------------------------------------------------------------------------------------
# The sources of the registered files

UPSTREAM: dict[tuple[str, str], RemoteFile] = {
    # Copied from shared/data/blat_ecolx/PROVENANCE.md ("Upstream copies"); pinned commits.
    ("blat_ecolx", "BLAT_ECOLX.a2m"): RemoteFile(
        "https://raw.githubusercontent.com/chloechsu/combining-evolutionary-and-assay-labelled-data/"
        "fdaa5bba8ffbb8ab25de57736fed8f9126838ae3/alignments/BLAT_ECOLX.a2m",
        "68e0c67d86159e6e6363aa3131d6275634d9c7c80decba32cbf055a6a0218320",
    ),
    ("blat_ecolx", "BLAT_ECOLX_Stiffler2015_dms.csv"): RemoteFile(
        "https://raw.githubusercontent.com/debbiemarkslab/DeepSequence/"
        "fd5c272b273385c0b87fce9dec410a9d74463393/examples/mutations/BLAT_ECOLX_Ranganathan2015.csv",
        "ca17d79b57a0624a2e4189d1912c32d4d80fd67ee0835549573223f9f90d5336",
    ),
    # shared/data/sequences/PROVENANCE.md: "amino-acid counts of EvoDiff's UniRef50 test split
    # (microsoft/evodiff, MIT)"; that repository ships the file as data/uniref50_aa_ref_test.csv.
    ("sequences", "uniref50_aa_composition.csv"): RemoteFile(
        "https://raw.githubusercontent.com/microsoft/evodiff/"
        "33206e99446f799ec11cf6e57d66ffaec837be91/data/uniref50_aa_ref_test.csv",
        "225620cad646c368148c83663953bc8f38f7b7f11500a6982666dd0842c60dc8",
    ),
}
"""(dataset, file) -> byte-identical upstream copy. Tests may override entries (monkeypatch.setitem)."""


def _focus_fasta(a2m: bytes) -> bytes:
    """The first (focus) record of an A2M file, upper-cased, with its gaps ('-', '.') removed."""
    first = a2m.decode("ascii").lstrip().split(">")[1]
    header, _, body = first.partition("\n")
    sequence = "".join(body.split()).upper().replace("-", "").replace(".", "")
    return f">{header.strip()}\n{sequence}".encode("ascii")


_CGDMS_WHEEL = RemoteFile(
    "https://files.pythonhosted.org/packages/py3/c/cgdms/cgdms-1.0-py3-none-any.whl",
    "8a7a9ea86df276acc7063b1c162cfbb20a8dd380cef345294f85817558798ca0",
)
_CGDMS_CHAINS = "cgdms/protein_data/train_val/"
_CGDMS_DROPPED = ("1LPB_A", "2CVI_A")  # share entries / 3-mers with chains kept out for evaluation
_THREE_LETTER = dict(
    zip(
        "ACDEFGHIKLMNPQRSTVWY",
        "ALA CYS ASP GLU PHE GLY HIS ILE LYS LEU MET ASN PRO GLN ARG SER THR VAL TRP TYR".split(),
        strict=True,
    )
)


def _cgdms_chains(wheel: zipfile.ZipFile) -> dict[str, list[str]]:
    """name -> lines (sequence, 3-state string, one line of N/CA/C/centroid xyz per residue)."""
    chains = {}
    for member in sorted(wheel.namelist()):
        name = member[len(_CGDMS_CHAINS) : -len(".txt")]
        if member.startswith(_CGDMS_CHAINS) and member.endswith(".txt") and "/" not in name:
            if name not in _CGDMS_DROPPED:
                chains[name] = wheel.read(member).decode("ascii").splitlines()
    if not chains:
        raise ValueError(f"no {_CGDMS_CHAINS}*.txt files in the archive")
    return chains


def _backbone_pdb(sequence: str, rows: list[str]) -> str:
    """N, CA and C of every residue as PDB ATOM lines (chain A, residues 1..L), as biotite writes them."""
    lines = []
    for index, (letter, row) in enumerate(zip(sequence, rows, strict=True), 1):
        values = [float(v) for v in row.split()]
        for k, (atom, element) in enumerate((("N", "N"), ("CA", "C"), ("C", "C"))):
            x, y, z = values[3 * k : 3 * k + 3]
            lines.append(
                f"ATOM  {len(lines) + 1:5d}  {atom:<3s} {_THREE_LETTER[letter]} A{index:4d}    "
                f"{x:8.3f}{y:8.3f}{z:8.3f}{1:6.2f}{0:6.2f}          {element:>2s}  "
            )
    return "\n".join(lines) + "\n"


def _build_cgdms_pdb(wheel: zipfile.ZipFile, target: Path) -> None:
    target.mkdir()
    for name, lines in _cgdms_chains(wheel).items():
        (target / f"{name}.pdb").write_bytes(_backbone_pdb(lines[0].strip(), lines[2:]).encode())


def _build_cgdms_manifest(wheel: zipfile.ZipFile, target: Path) -> None:
    split = {}
    for part in ("train", "val"):
        for name in wheel.read(f"cgdms/datasets/{part}.txt").decode("ascii").split():
            split[name] = part
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["name", "split", "n_res", "sequence", "ss3"])
    for name, lines in _cgdms_chains(wheel).items():
        sequence = lines[0].strip()
        writer.writerow([name, split.get(name, ""), len(sequence), sequence, lines[1].strip()])
    target.write_bytes(buffer.getvalue().encode("ascii"))


_KCOV_DOMAINS = (
    "https://raw.githubusercontent.com/Kortemme-Lab/covariation/"
    "e806290c96d08474e8043aff118f3568d526b2e7/input/domains"
)

# The chains of shared/data/structures/manifest.csv: NAME:N_RES:SEQ_SHA[:PFAM]. SEQ_SHA = the first 8 hex
# digits of sha256(seq); PFAM marks the 36 renumbered domain files of Kortemme-Lab/covariation, fetched
# from there (<_KCOV_DOMAINS>/<PFAM>/<NAME>.pdb); every other chain is cut from PDB entry NAME[:4].
_STRUCTURE_CHAINS = """
1TTQ_A:256:55bfae04 4BLM_A:256:2605e7ea 1HTI_A:248:07ce942b 1ZYM_B:248:d92f6623
1FT8_C:244:8aedd135 2A01_A:243:bfff76ad 1ACB_E:241:0f90d1a9 1DXX_A:238:391389d7
1CHK_A:238:91045250 1LVM_A:229:2393a656 1OPG_H:227:86305f18 2BRD_A:221:8a507e3f
1AKY_A:218:f7a51a37 1ANK_A:214:c7fb9fc9 1OPG_L:214:be37e95d 1CUN_A:213:bea48a2f
1IO2_A:213:e482bcd4 1NFI_E:213:daa4cdab 1BOY_A:211:cdd27dc4 1U5P_A:211:5667cf46
2NTE_A:210:26f4792a 1JLV_A:207:1942322c 1JNX_X:207:2a524b58 1FC1_A:206:5e6367d7
3L15_B:204:1139a924 5OAQ_A:204:dd1d642c 1A0F_A:201:93edfe75 1G6N_B:201:0134085e
1IDS_A:198:a101354f 1N0J_A:198:e65e4d2e 2TRT_A:198:b3f2edb4 1TUP_A:196:44d82a6b
5VP3_A:195:a54a2e25 3HHR_B:195:efd48ebe 1G3P_A:192:961ad420 2Q98_A:191:03a5d844
1A23_A:189:17684ef8 1HGU_A:186:1cb2470a 1XXN_A:185:27b6dda4 3D2A_A:179:182d9763
1BNL_A:178:8253a9e0 2KS4_A:176:c416c7c7 1HNG_A:175:5b9fc37d 1HK0_X:173:af6b69e1
1XZO_A:172:77a8a2b9 1FLV_A:168:f0bfe087 1GUA_A:167:660a1873 2ARF_A:165:2de538be
3BCI_A:165:f310fa47 137L_B:164:f17b511e 1LS4_A:164:0e71f911 1NMV_A:163:d8766228
1B0O_A:161:de6af188 1DDR_A:159:e193a4b6 1MX4_B:159:0cf0a545 4BUQ_A:158:afa444e5
5T43_A:158:96cf6067 1A5E_A:156:7a2d16ef 1H56_A:156:ac3ba190 1GOB_A:155:6e6629c1
1SPD_A:153:a08c7027 1BVC_A:153:4e1e5bdd 1IOB_A:153:8f79ab69 1AM7_A:150:9461bd4f
1Z2U_A:150:51ac447f:PF00179 1DIV_A:149:ad8b846c 1CFD_A:148:787e5215 1RIL_A:147:db43a635
1THQ_A:147:8af238c3 3F6R_A:147:20f2d743 1RHG_A:145:e091a25d 2N53_A:143:32173158
1JY0_B:141:6d21003a 1TZV_A:141:fc37e443:PF01029 3PG0_A:140:93ffbd98 1PFL_A:139:f6d78c10
3D3B_A:139:c38d5c7d 2IN9_A:139:5f3caa6e 1QJP_A:137:e36fe699 2Z3V_A:137:94a622fe:PF00582
1JL3_A:137:91dd2c30:PF01451 1EY0_A:136:94a6f432 3F04_A:136:df66ea30:PF00168 2LTB_A:135:dd53078b
1AQT_A:135:e0f8f1dd:PF02823 4BVM_A:133:4173920a 2H3F_A:131:29dfbaa5 1C52_A:131:1b214798
1HMS_A:131:9470bc4b 1IFB_A:131:d4d22551 1ITM_A:130:eff2bab3 1B7S_A:130:3de1ab7d
1E6K_A:130:3347fc2d 1EL1_A:130:50b22954 1QGV_A:130:b0d9f31d 1FLQ_A:129:027a3774
1PDO_A:129:4ac7cf12 1E65_A:128:e15d1ac4 1OH0_B:128:07071249 1O1U_A:127:db0ae258
2PR5_A:127:891ca5cd 4BJX_A:127:fbf3f5c6 4WAA_A:126:d08906de 2QLC_A:126:65c79e34:PF04002
1A7V_A:125:55dd9953 2M5S_A:124:8a289a1d 1HFZ_D:124:883cd45d 1KF2_A:124:3fdb0ecd
1P2P_A:124:4789b566 1NM1_G:123:085120aa 1QND_A:123:e3a05467 3S4M_A:121:3622bf27
1MVO_A:121:f4a22298:PF00072 5JXB_C:119:2d1495cb 2PND_A:119:a24022a6:PF07686
2A0B_A:118:b06fdbc0:PF01627 1UNQ_A:117:351cc4cb:PF00169 1C2R_A:116:d30e45ff
3JVL_A:116:a1661221:PF00439 1LVE_A:114:2bfc96e6 1SCE_C:111:1d5eb7a5 1YEA_A:111:a7973da0
2MMX_A:111:b5724789 1BAN_C:109:71441166 1RTP_1:109:4ab87912 3DVI_A:109:b6611d0d
1FQT_A:109:ff50274e:PF00355 1RRO_A:108:df9f404b 2KYC_A:108:4294e4e4 2TRX_A:108:6edb73f9
3SSI_A:108:265e4e14 1GN0_A:108:30442a68:PF00581 1OAP_A:108:1a3e4899:PF00691 1FKB_A:107:de9f9337
1M7T_A:107:625f7cdd 1NFI_B:107:d279ce59 3GVA_A:107:5ea6b7cf:PF01035 2N7Z_A:106:7ae9201d
1JIW_I:105:4decf0db 1YYJ_A:105:53f8f488 1FB0_A:105:0cfb5802:PF00085 1AKK_A:104:e8665b5a
1AYF_B:104:b4f08868 1BU4_A:104:654fa2cf 2K3K_A:104:604e235a 1KCQ_A:103:e22bcd6a
1ONC_A:103:74b5f0e9 2H3L_A:103:351ac1d0:PF00595 2C9Q_A:102:ea0b8b8a 2CLR_B:100:e92bf108
2ZXJ_A:100:80df4ced:PF00486 3GQS_A:100:966b85ac:PF00498 2K7K_A:99:c474b4c4 1FRD_A:98:bddd9d12
1FXA_A:98:d5021641 1APS_A:98:dea20306 1H7M_A:97:18208d1b 1MGR_A:97:411ee0c8 1RIS_A:97:45370168
1D5G_A:96:0615ddfe 1IV7_B:96:61645d21 1N88_A:96:86471690 3O39_A:96:b99f520f 1LNI_A:96:a00bb1f0
1U2H_A:96:a60bff10:PF07679 3BN0_A:95:a0c51b1f 1IET_A:94:b6d17693 1TTG_A:94:6905a3c5
1J8I_A:93:6842a1ff 1WIT_A:93:2c0d0f4d 1LMB_4:92:93528d4c 2H61_B:92:5ef09329 4N6V_0:91:1870b5c4
2BJD_A:90:eb253d3e 2MPC_A:90:be30fec0 3BR8_A:90:6b6125ee:PF00708 3MQI_A:90:8cd9f30b:PF01833
1H0X_A:89:9ec0e7ad 1BTA_A:89:f0d632b0 1TEN_A:89:e54ef0b3 1TIT_A:89:8a914b33 1TPK_A:88:dd0dcaea
1Y4Y_A:87:a9f351e2 1YHB_A:87:9dc1f52f 3D3B_J:87:6f9d0ca5 2X1B_A:87:5554c859:PF00076
1PTF_A:87:6ff94fe4:PF00381 1AYI_A:86:fb3d0d24 1IMQ_A:86:97295d31 2ABD_A:86:14478238
2HPR_A:86:9ececebb 4YEF_B:86:c3272078 1POH_A:85:bafe3bf8 1B5M_A:84:0b920a5b 451C_A:82:d77c5f56
3FYM_A:82:5eb5490f:PF12844 1GLU_A:81:af80c5db 1O6X_A:81:0f066f0d 1KDX_A:81:8254bf8a
2O37_A:81:0e69d171:PF00226 1R6R_A:80:37c53843 1HUU_A:80:46e5acf6 2KJ3_A:79:03cb525d
2PTL_A:78:19b85ae2 3G1G_A:77:6924de16 1HME_A:77:5ce1f726 2BWF_A:77:8dacbcf8:PF00240
1T8K_A:77:985351cb:PF00550 1GUA_B:76:c3431bf9 1AAR_A:76:233b4b0b 6ICB_A:76:62acf2d1
5TR5_A:75:a4aa3af8 1HCQ_A:74:d87eadc4 1WVN_A:74:8f7a5c70:PF00013 2EVB_A:74:09be3bb5:PF00364
3FIS_A:73:2feb3e07 3C2I_A:72:3a8afc12 1A43_A:72:3e591c44 1DKT_A:72:7cfc867d 1SPB_P:71:8fdc94b6
2HIP_A:71:d1cf6d9c 3I2Z_A:71:6fccdd3f:PF00313 1BFM_A:69:cf458515 1L6H_A:69:17c90866
1MJC_A:69:2eda23a7 1UZC_A:69:6e218c8e 1CTF_A:68:2cd07b6e:PF00542 1CSP_A:67:27d80e68
1QQV_A:67:a1491e58 2O9S_A:67:9a91e2de:PF00018 1AZP_A:66:ba6d6e57 1G6P_A:66:5b1951d5
1MSI_A:66:aade161a 2CI2_I:65:03da0724 1ACB_I:63:59f6595e 5CRO_A:61:1ed6b00a 4JZ4_A:60:86727919
1BXY_A:60:d8cbedf3:PF00327 2RPN_A:59:5ac81c6a 1SHF_A:59:c643ef5b 2A36_A:59:945f0e0e
1BPI_A:58:70b8ee8c 2SPZ_A:58:bb4a30d5 1IOJ_A:57:07fefd97 1SHG_A:57:338cff41 1EM7_A:56:52d91eff
1ROP_A:56:fcdf3b54 2JUC_A:55:f2b57726 4HE7_A:54:5142ad2f 1ARR_A:53:d9129d0b 1BRF_A:53:aaacb180
1IRO_A:53:2aaa3fc8 1GV5_A:52:96aa0673 2WQG_A:51:33ce9916 1GUU_A:50:d18b2ab0:PF00249
1OTR_A:49:4eb8ef7d 1NVO_A:48:73df3f37 1JL9_B:45:02ed5f4d 1W4E_A:45:16cf8d9e 1W4H_A:45:75fb3f91
1SAK_A:42:012eae00 1K9Q_A:40:788c41f8 5OAQ_L:40:a1e20f18
"""


def _chain_records(table: str) -> tuple[ChainRecord, ...]:
    records = []
    for token in table.split():
        name, n_res, digest, *pfam = token.split(":")
        url = f"{_KCOV_DOMAINS}/{pfam[0]}/{name}.pdb" if pfam else ""
        records.append(ChainRecord(name, int(n_res), digest, url))
    return tuple(records)


SOURCES: dict[tuple[str, str], Source] = {
    ("blat_ecolx", "BLAT_ECOLX_wt.fasta"): BuiltFile(
        "BLAT_ECOLX.a2m",
        _focus_fasta,
        "a7e0607e79fce5f7b5f62a3db59d09e20355c7c6658f1e616e91e2a96e4a2f6f",
        "the first record, gaps removed",
    ),
    ("structures", "pdb"): PdbChains(
        _chain_records(_STRUCTURE_CHAINS),
        " (36 domain files from Kortemme-Lab/covariation on GitHub)",
    ),
    ("structures", "manifest.csv"): ChainManifest("pdb"),
    ("structures_cgdms", "pdb"): ArchiveBuild(
        _CGDMS_WHEEL,
        _build_cgdms_pdb,
        "b62d3888560de98c83d648d1f4f17d7399adf71d405ccfe6c25619cd63e211ce",
        "converted from the cgdms 1.0 wheel",
    ),
    ("structures_cgdms", "manifest.csv"): ArchiveBuild(
        _CGDMS_WHEEL,
        _build_cgdms_manifest,
        "a2e4b469d98d36f5c7bb28313fe29203e5cf9a11911073565c364ec9320610ee",
        "converted from the cgdms 1.0 wheel",
    ),
    ("sequences", "family_domains_train.fasta"): Rebuild(
        "the natural alignments of github.com/Kortemme-Lab/covariation (MIT), the WW and Kunitz "
        "alignments of github.com/jertubiana/PGM (BSD-3), BLAT_ECOLX.a2m and an SCN5A_HUMAN "
        "alignment (MIT source; no public copy identified)",
        "for the 36 files analysis/natural_alignments/PF*.align.80 of Kortemme-Lab/covariation "
        "(commit e806290; all but PF00018, PF00085, PF00240, PF00595; in name order), then "
        "data/WW/WW_domain_MSA.fasta and data/Kunitz/Kunitz_domain_MSA.fasta of jertubiana/PGM "
        "(commit f68dfe3), BLAT_ECOLX.a2m (`protgen data fetch blat_ecolx`) and the SCN5A alignment: "
        "remove '-' and '.', upper-case, drop sequences shorter than 20 residues and repeats within "
        "the file, and write '>FAMILY|id' records (FAMILY = the PF id, WW, Kunitz, BLAT_ECOLX, "
        "SCN5A) in 80-column lines",
    ),
}
"""(dataset, file) -> how a file without a byte-identical upstream copy is obtained (`source_of`)."""


def source_of(name: str, filename: str) -> Source | None:
    """How `name/filename` is obtained when it is missing: `UPSTREAM`, else `SOURCES`, else None."""
    return UPSTREAM.get((name, filename)) or SOURCES.get((name, filename))


# ---------------------------------------------------------------------------------------------------
# Where files are looked for


def _dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def cache_dir(name: str) -> Path:
    """The user cache folder of dataset `name` (created on download, not here)."""
    if os.environ.get("PROTGEN_CACHE_DIR"):
        root = Path(os.environ["PROTGEN_CACHE_DIR"])
    elif os.environ.get("XDG_CACHE_HOME"):
        root = Path(os.environ["XDG_CACHE_HOME"]) / "protgen_jax"
    else:
        root = Path.home() / ".cache" / "protgen_jax"
    return root.expanduser() / name


def _shared_dirs(name: str) -> list[Path]:
    found = []
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            candidate = folder / "shared" / "data" / name
            if candidate.is_dir() and candidate not in found:
                found.append(candidate)
    return found


def search_path(name: str) -> list[Path]:
    """The folders searched for dataset `name`, in order (existing ones only, cache last, even if absent).

    Returns:
      [$PROTGEN_DATA_DIR/<name>] if that folder exists, then every existing `shared/data/<name>` above the
      working directory and above the package, then `cache_dir(name)`.
    """
    _dataset(name)
    folders = []
    if os.environ.get("PROTGEN_DATA_DIR"):
        env_dir = Path(os.environ["PROTGEN_DATA_DIR"]).expanduser() / name
        if env_dir.is_dir():
            folders.append(env_dir)
    folders.extend(d for d in _shared_dirs(name) if d not in folders)
    folders.append(cache_dir(name))
    return folders


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _digest_listing(hashes: dict[str, str]) -> str:
    """sha256 of a `sha256sum`-style listing: `<sha256>  <name>` lines sorted by name."""
    listing = "".join(f"{hashes[name]}  {name}\n" for name in sorted(hashes))
    return hashlib.sha256(listing.encode()).hexdigest()


def _digest(path: Path) -> str:
    """sha256 of a file, or `_digest_listing` of the files in a folder."""
    if not path.is_dir():
        return sha256_of(path)
    return _digest_listing({p.name: sha256_of(p) for p in path.iterdir()})


def _where_to_put(name: str) -> str:
    return (
        f"place it in $PROTGEN_DATA_DIR/{name}/, in shared/data/{name}/ beside the checkout, or in "
        f"{cache_dir(name)}/"
    )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------
# Downloads


def _network_error(url: str, err: BaseException, what: str, hint: str) -> DataError:
    """One-line DataError for a failed download of `what` from `url`; `hint` says what to do by hand."""
    if isinstance(err, urllib.error.HTTPError):
        return DataError(f"{url}: download of {what} failed: HTTP {err.code} {err.reason}")
    if isinstance(err, urllib.error.URLError | ConnectionError | TimeoutError):
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        return DataError(f"cannot reach {_host(url)}: {reason}; {hint}")
    return DataError(f"{url}: download of {what} failed: {err}")


def _by_hand(url: str, folder: Path, filename: str) -> str:
    named = "" if Path(urllib.parse.urlsplit(url).path).name == filename else f" as {filename}"
    return (
        f"download {url} by hand and place it in {folder}/{named}, or set PROTGEN_DATA_DIR to a "
        f"folder holding {folder.name}/{filename}"
    )


def _download(remote: RemoteFile, target: Path, what: str) -> Path:
    """Stream `remote` into a temporary file beside `target`, check its sha256, move it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, part_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".part"
    )
    part = Path(part_name)
    digest = hashlib.sha256()
    try:
        with (
            os.fdopen(handle, "wb") as out,
            urllib.request.urlopen(remote.url, timeout=_TIMEOUT) as response,
        ):
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=target.name, disable=None, leave=False
            ) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        actual = digest.hexdigest()
        if actual != remote.sha256:
            raise DataError(
                f"{remote.url}: sha256 mismatch for {what}: expected {remote.sha256}, got {actual}; "
                "the download was discarded"
            )
        os.replace(part, target)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise _network_error(
            remote.url, err, what, _by_hand(remote.url, target.parent, target.name)
        ) from err
    finally:
        part.unlink(missing_ok=True)
    return target


def _obtain_remote(name: str, filename: str, remote: RemoteFile) -> Path:
    return _download(remote, cache_dir(name) / filename, f"{name}/{filename}")


def _write_checked(name: str, filename: str, data: bytes, sha256: str | None, origin: str) -> Path:
    """Write `data` to the cache as `filename` (atomically), if its sha256 is `sha256` (None: any)."""
    actual = hashlib.sha256(data).hexdigest()
    if sha256 is not None and actual != sha256:
        raise DataError(
            f"{name}/{filename} built from {origin} has sha256 {actual}, expected {sha256}; "
            "nothing was written"
        )
    folder = cache_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    handle, part_name = tempfile.mkstemp(dir=folder, prefix=f".{filename}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(part_name, folder / filename)
    finally:
        Path(part_name).unlink(missing_ok=True)
    return folder / filename


def _obtain_built(name: str, filename: str, source: BuiltFile) -> Path:
    origin = resolve(name, source.source)
    try:
        data = source.build(origin.read_bytes())
    except (ValueError, IndexError) as err:
        raise DataError(f"{origin}: cannot build {name}/{filename} from it: {err}") from err
    return _write_checked(name, filename, data, source.sha256, str(origin))


# PDB chains -----------------------------------------------------------------------------------------


def _get_text(url: str, hint: str) -> str | None:
    """The text at `url`; None for an HTTP error (e.g. 404), a one-line DataError when unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
            return response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise _network_error(url, err, "a structure", hint) from err


def _cut_chain(text: str, chain_id: str, url: str) -> str | None:
    """One chain of a PDB file: its ATOM lines (and HETATM MSE), first model, altloc blank or A."""
    atoms = []
    for line in text.splitlines():
        record = line[:6]
        if record == "ENDMDL":
            break
        if (
            (record == "ATOM  " or (record == "HETATM" and line[17:20] == "MSE"))
            and line[21:22] == chain_id
            and line[16:17] in (" ", "A")
        ):
            atoms.append(line)
    if not atoms:
        return None
    return (
        "\n".join([f"REMARK   1 EXTRACTED CHAIN {chain_id} FROM {url}", *atoms, "TER", "END"])
        + "\n"
    )


def _cut_chain_cif(text: str, chain_id: str, url: str) -> str | None:
    """One chain of an mmCIF file (author chain id), first model, as PDB text (biotite)."""
    from biotite.structure.io import pdb, pdbx

    try:
        atoms = pdbx.get_structure(
            pdbx.CIFFile.read(io.StringIO(text)), model=1, use_author_fields=True
        )
    except Exception:  # biotite raises many types on malformed files; all mean "unusable"
        return None
    atoms = atoms[(atoms.chain_id == chain_id) & (~atoms.hetero | (atoms.res_name == "MSE"))]
    if atoms.array_length() == 0:
        return None
    out = pdb.PDBFile()
    out.set_structure(atoms)
    buffer = io.StringIO()
    out.write(buffer)
    return f"REMARK   1 EXTRACTED CHAIN {chain_id} FROM {url}\n{buffer.getvalue()}"


def _check_chain(path: Path, record: ChainRecord) -> str | None:
    """None when the chain file holds the recorded chain, else what differs."""
    from protgen_jax.data.structures import load_chain

    try:
        chain = load_chain(path, record.chain_id, min_length=1, max_length=1 << 30)
    except DataError as err:
        return f"{record.name}: unreadable ({err})"
    digest = hashlib.sha256(chain.sequence.encode()).hexdigest()[:8]
    if (chain.length, digest) != (record.n_res, record.seq_sha):
        return (
            f"{record.name}: {chain.length} residues, sequence digest {digest} (recorded: "
            f"{record.n_res}, {record.seq_sha})"
        )
    return None


def _download_entry(url: str, archive: bool, hint: str) -> tuple[str | None, str]:
    """(text, the URL it came from) of one structure file; (None, url) when it cannot be downloaded.
    An entry of the PDB archive without a PDB-format file is tried as mmCIF."""
    text = _get_text(url, hint)
    if text is None and archive and url.endswith(".pdb"):
        cif = url[: -len(".pdb")] + ".cif"
        text = _get_text(cif, hint)
        if text is not None:
            return text, cif
    return text, url


def _place_chains(
    text: str | None, used: str, records: list[ChainRecord], staging: Path, folder: Path
) -> list[str]:
    """Cut, check and place the chains `records` of one structure file; returns the problems."""
    if text is None:
        return [f"{record.name}: {used} could not be downloaded" for record in records]
    problems = []
    for record in records:
        cut = (_cut_chain_cif if used.endswith(".cif") else _cut_chain)(text, record.chain_id, used)
        if cut is None:
            problems.append(f"{record.name}: no chain {record.chain_id} in {used}")
            continue
        staged = staging / f"{record.name}.pdb"
        staged.write_text(cut)
        problem = _check_chain(staged, record)
        if problem:
            staged.unlink()
            problems.append(problem)
        else:
            os.replace(staged, folder / staged.name)
    return problems


def _fetch_chains(name: str, filename: str, source: PdbChains) -> Path:
    """Fill `cache_dir(name)/filename` with the chains it lacks; chains that fail are reported.

    Structure files are downloaded in parallel threads; chains are cut and checked (biotite) here."""
    root = cache_dir(name)
    folder = root / filename
    folder.mkdir(parents=True, exist_ok=True)
    todo = [r for r in source.chains if not (folder / f"{r.name}.pdb").is_file()]
    groups: dict[str, list[ChainRecord]] = {}
    for record in todo:
        groups.setdefault(record.source_url(), []).append(record)
    hint = (
        f"download the entries by hand ({pdb_url()}/<ID>.pdb) and cut each chain into "
        f"{folder}/<ID>_<chain>.pdb, or set PROTGEN_DATA_DIR to a folder holding {name}/{filename}"
    )
    problems: list[str] = []
    with (
        tempfile.TemporaryDirectory(dir=root, prefix=".staging-") as staging,
        ThreadPoolExecutor(_WORKERS) as pool,
        tqdm(total=len(todo), unit="chain", desc=f"{name}/{filename}", disable=None) as bar,
    ):
        futures = {
            pool.submit(_download_entry, url, not records[0].url, hint): records
            for url, records in groups.items()
        }
        try:
            for future in as_completed(futures):
                records = futures[future]
                text, used = future.result()
                problems.extend(_place_chains(text, used, records, Path(staging), folder))
                bar.update(len(records))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    done = sum((folder / f"{r.name}.pdb").is_file() for r in source.chains)
    if done == 0:
        raise DataError(
            f"{name}/{filename}: no chain could be fetched ({'; '.join(problems[:3])}); {hint}"
        )
    if problems:
        logger.warning(
            "%s/%s: %d of %d chains fetched and checked; %d left out: %s",
            name,
            filename,
            done,
            len(source.chains),
            len(problems),
            "; ".join(problems),
        )
    return folder


def _remark_source(path: Path) -> str:
    with path.open(errors="replace") as handle:
        first = handle.readline()
    return (
        first.split(" FROM ", 1)[1].strip()
        if first.startswith("REMARK") and " FROM " in first
        else ""
    )


def _obtain_manifest(name: str, filename: str, source: ChainManifest) -> Path:
    from protgen_jax.data.structures import load_chain

    folder = resolve(name, source.folder)
    chains = source_of(name, source.folder)
    if isinstance(chains, PdbChains):
        names = [r.name for r in chains.chains]
    else:
        names = sorted(p.stem for p in folder.glob("*.pdb"))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["name", "source", "chain", "n_res", "chain_breaks", "seq"])
    for chain_name in names:
        path = folder / f"{chain_name}.pdb"
        if not path.is_file():
            continue
        chain_id = chain_name.rsplit("_", 1)[1] if "_" in chain_name else None
        chain = load_chain(path, chain_id, min_length=1, max_length=1 << 30)
        origin = _remark_source(path) or str(path)
        writer.writerow(
            [chain_name, origin, chain.chain_id, chain.length, len(chain.breaks), chain.sequence]
        )
    return _write_checked(name, filename, buffer.getvalue().encode(), None, str(folder))


# Archives --------------------------------------------------------------------------------------------


def _archive_path(name: str, remote: RemoteFile) -> Path:
    return cache_dir(name) / Path(urllib.parse.urlsplit(remote.url).path).name


def _obtain_from_archive(name: str, filename: str, source: ArchiveBuild) -> Path:
    folder = cache_dir(name)
    archive = _archive_path(name, source.archive)
    if not (archive.is_file() and sha256_of(archive) == source.archive.sha256):
        _download(source.archive, archive, f"the archive of {name}")
    target = folder / filename
    with tempfile.TemporaryDirectory(dir=folder, prefix=".staging-") as staging:
        staged = Path(staging) / filename
        try:
            with zipfile.ZipFile(archive) as opened:
                source.build(opened, staged)
        except (zipfile.BadZipFile, KeyError, ValueError, IndexError) as err:
            raise DataError(f"{archive}: cannot build {name}/{filename} from it: {err}") from err
        actual = _digest(staged)
        if actual != source.sha256:
            raise DataError(
                f"{name}/{filename} built from {source.archive.url} has sha256 {actual}, expected "
                f"{source.sha256}; nothing was written"
            )
        _remove(target)
        os.replace(staged, target)
    return target


# ---------------------------------------------------------------------------------------------------
# Public API


def _rebuild_message(name: str, filename: str, source: Rebuild | None) -> str:
    if source is None:
        return f"{name}/{filename} cannot be downloaded (no upstream copy); {_where_to_put(name)}"
    return (
        f"{name}/{filename} cannot be downloaded as-is: it was built from {source.upstream}. To "
        f"rebuild it: {source.steps}. Then {_where_to_put(name)}"
    )


def _obtain(name: str, filename: str, source: Source | None) -> Path:
    if isinstance(source, RemoteFile):
        return _obtain_remote(name, filename, source)
    if isinstance(source, BuiltFile):
        return _obtain_built(name, filename, source)
    if isinstance(source, PdbChains):
        return _fetch_chains(name, filename, source)
    if isinstance(source, ChainManifest):
        return _obtain_manifest(name, filename, source)
    if isinstance(source, ArchiveBuild):
        return _obtain_from_archive(name, filename, source)
    raise DataError(_rebuild_message(name, filename, source))


def _is_current(path: Path, source: Source | None) -> bool:
    """Whether `path` is a usable copy: present, with the right sha256 where one is known, and for a
    chain folder holding every chain."""
    if isinstance(source, RemoteFile | BuiltFile):
        return path.is_file() and sha256_of(path) == source.sha256
    if isinstance(source, PdbChains):
        return path.is_dir() and all((path / f"{r.name}.pdb").is_file() for r in source.chains)
    return path.exists()


def resolve(name: str, filename: str | None = None) -> Path:
    """Find a dataset file (or, with `filename=None`, the dataset folder), obtaining it if needed.

    Args:
      name: dataset name, a key of `DATASETS`.
      filename: one of the dataset's files; None asks for the folder that holds all of them.

    Returns:
      Path of the first hit along `search_path(name)`; for a folder, the first one holding every file
      (after obtaining what is missing into the cache, when there is none).

    Raises:
      DataError: unknown dataset or file, a file that is nowhere and cannot be obtained (saying where it
        comes from and where to put it), a failed / corrupt download, or (folder form) files spread over
        several folders.
    """
    dataset = _dataset(name)
    if filename is None:
        for folder in search_path(name):
            if all((folder / f).exists() for f in dataset.files):
                return folder
        folders = sorted({str(path.parent) for path in fetch(name).values()})
        if len(folders) != 1:
            raise DataError(
                f"dataset {name!r}: its files are spread over {', '.join(folders)}; gather them in "
                "one folder or resolve them one file at a time"
            )
        return Path(folders[0])
    if filename not in dataset.files:
        raise DataError(
            f"dataset {name!r} has no file {filename!r}; its files: {', '.join(dataset.files)}"
        )
    for folder in search_path(name):
        if (folder / filename).exists():
            return folder / filename
    source = source_of(name, filename)
    if source is None or isinstance(source, Rebuild):
        searched = ", ".join(str(folder) for folder in search_path(name))
        raise DataError(f"{_rebuild_message(name, filename, source)} (searched {searched})")
    return _obtain(name, filename, source)


def fetch(name: str) -> dict[str, Path]:
    """Make every file of dataset `name` available, obtaining missing ones into the cache.

    A file counts as present when some folder on `search_path(name)` holds a current copy (`_is_current`:
    the right sha256 where one is known, every chain of a chain folder); otherwise it is obtained as
    `source_of` says (a cached copy with a wrong hash is replaced, a partial chain folder completed).
    Files that cannot be obtained are reported together at the end, with their upstream and rebuild steps.

    Returns:
      {filename: path} for every file of the dataset.

    Raises:
      DataError: unknown dataset, a failed / corrupt download or build, an unreachable host (one line), or
        files that cannot be downloaded (listed, with where they come from and where to put them).
    """
    dataset = _dataset(name)
    found: dict[str, Path] = {}
    obtained: set[str] = set()
    missing: list[str] = []
    for filename in dataset.files:
        source = source_of(name, filename)
        hit = next(
            (
                folder / filename
                for folder in search_path(name)
                if _is_current(folder / filename, source)
            ),
            None,
        )
        if isinstance(source, ChainManifest) and source.folder in obtained:
            hit = None  # its chain folder changed: write it again
        if hit is not None:
            found[filename] = hit
        elif source is None or isinstance(source, Rebuild):
            missing.append(filename)
        else:
            found[filename] = _obtain(name, filename, source)
            obtained.add(filename)
    for filename in dataset.files:  # archives are kept only until everything built from them exists
        source = source_of(name, filename)
        if isinstance(source, ArchiveBuild) and len(found) == len(dataset.files):
            _archive_path(name, source.archive).unlink(missing_ok=True)
    if missing:
        messages = [_rebuild_message(name, f, source_of(name, f)) for f in missing]
        raise DataError(
            messages[0] if len(messages) == 1 else f"dataset {name!r}: " + "; ".join(messages)
        )
    return found


@dataclass(frozen=True)
class FileStatus:
    """Where a dataset file is, and how it is obtained where it is missing."""

    filename: str
    path: Path | None  # the first hit along search_path, None when missing
    how: str  # how `fetch` obtains it, or why it cannot
    fetchable: bool  # `protgen data fetch` can obtain it


def file_status(name: str) -> list[FileStatus]:
    """The status of every file of dataset `name` (no download, no hashing)."""
    dataset = _dataset(name)
    folders = search_path(name)
    rows = []
    for filename in dataset.files:
        source = source_of(name, filename)
        path = next((f / filename for f in folders if (f / filename).exists()), None)
        how = "no upstream copy: place it by hand" if source is None else source.how()
        rows.append(
            FileStatus(filename, path, how, not (source is None or isinstance(source, Rebuild)))
        )
    return rows


def list_datasets() -> list[tuple[str, str, str]]:
    """(name, description, where) for every dataset.

    where: the folder holding all its files; "missing" when none is found; "incomplete: F, ... missing"
    otherwise. description: what it is, and how `fetch` obtains each file ("[fetch: ...]").
    """
    rows = []
    for name in sorted(DATASETS):
        dataset = DATASETS[name]
        statuses = file_status(name)
        where = next(
            (
                str(folder)
                for folder in search_path(name)
                if all((folder / f).exists() for f in dataset.files)
            ),
            None,
        )
        if where is None:
            absent = [s.filename for s in statuses if s.path is None]
            where = (
                "missing"
                if len(absent) == len(statuses)
                else f"incomplete: {', '.join(absent)} missing"
            )
        ways: dict[str, list[str]] = {}
        for status in statuses:
            ways.setdefault(status.how, []).append(status.filename)
        how = "; ".join(f"{', '.join(files)}: {way}" for way, files in ways.items())
        rows.append((name, f"{dataset.description} [fetch: {how}]", where))
    return rows
